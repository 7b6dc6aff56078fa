"""What to tune: workloads, their builders, analytical estimates and the
layout over a device mesh."""
