"""Problems: the aggregate and its decider (`domain`), the command service (load → decide →
append), the inline projector into the problem view, and `/v1/problems`."""
