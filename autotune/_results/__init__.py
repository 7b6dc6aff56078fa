"""The tuner's answers: results, the JSON report, the result cache, their
validation, plots and the recommendation."""
