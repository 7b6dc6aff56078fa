"""Compiling a step at one batch size: probe records, the prober, XLA's dump,
shared kernels and compile concurrency."""
