"""The searches for the largest batch that fits: by need against a budget, and
by compiles alone."""
