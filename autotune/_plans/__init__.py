"""Rematerialization plans: which blocks of a model recompute their
activations, under which policy, and the search for the cheapest plan that
fits a wanted batch (`autotune._plans.search`)."""
