"""Time of a result-cache hit: find_max_batch for VGG16 on a described H100,
three times in one process against a fresh cache (a miss, then two hits).

    JAX_PLATFORMS=cpu python scripts/bench_cache_hit.py
"""

import tempfile
import time

from autotune import ResultCache, find_max_batch, get_target
from autotune.models import VGGConfig


def main() -> None:
    (workload,) = VGGConfig("vgg16").workloads()
    target = get_target("h100-sxm-80gb")
    cache = ResultCache(tempfile.mkdtemp())
    for run in range(3):
        start = time.perf_counter()
        result = find_max_batch(workload, target=target, cache=cache)
        seconds = time.perf_counter() - start
        print(
            f"run {run}: batch {result.batch}, from cache: {result.from_cache}, "
            f"{result.compiles if not result.from_cache else 0} compiles, {seconds:.2f} s"
        )


if __name__ == "__main__":
    main()
