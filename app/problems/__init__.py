"""Problems: the aggregate and its decider (`domain`), the command service (load → decide →
append), the inline projector into the problem view, `/v1/problems`, and the automatic actions
(`automatic`: what falls due; `scheduler`: finding and appending it)."""
