"""Tests run on the CPU: the CUDA plugin, if installed, only serves described targets."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

# Eight CPU devices for the mesh tests; single-device tests use the first.
jax.config.update("jax_num_cpu_devices", 8)
