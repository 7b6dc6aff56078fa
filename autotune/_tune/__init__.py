"""The tuner's entry points: find_max_batch, compare and peak_breakdown."""
