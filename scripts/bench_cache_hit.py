"""Time of a result-cache hit: find_max_batch for VGG16 on a described H100,
three times in one process against a fresh cache (a miss, then two hits).

    JAX_PLATFORMS=cpu python scripts/bench_cache_hit.py
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # before scripts/autotune.py

from autotune import ResultCache, find_max_batch, get_target  # noqa: E402
from autotune.zoo import Choice, vgg_variants  # noqa: E402


def main() -> None:
    variant = vgg_variants("vgg16", [Choice("none")])["vgg16 remat=none"]
    target = get_target("h100-sxm-80gb")
    cache = ResultCache(tempfile.mkdtemp())
    for run in range(3):
        start = time.perf_counter()
        result = find_max_batch(
            variant.step,
            variant.args_for_batch,
            target=target,
            estimate=variant.estimate,
            cache=cache,
        )
        seconds = time.perf_counter() - start
        print(
            f"run {run}: batch {result.batch}, from cache: {result.from_cache}, "
            f"{result.compiles if not result.from_cache else 0} compiles, {seconds:.2f} s"
        )


if __name__ == "__main__":
    main()
