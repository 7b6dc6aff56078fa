"""Tests run on the CPU: the CUDA plugin, if installed, only serves described targets."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
