"""Pure decisions, no I/O of their own: what a partition day means, what retention keeps, what may go."""
