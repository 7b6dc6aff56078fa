"""The tuner's foundations: one error type, checks of values from outside,
units, signals and the budget record."""
