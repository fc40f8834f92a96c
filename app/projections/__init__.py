"""Read models derived from the event log: the problem view (updated inline, in the same
transaction as the append, so clients read their own writes), aging and statistics."""
