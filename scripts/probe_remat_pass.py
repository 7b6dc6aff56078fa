"""Where XLA's remat pass starts to act on a described GPU: compiled need of the
VGG16 step with the pass off and on, at batches around and above the card's memory.

    JAX_PLATFORMS=cpu python scripts/probe_remat_pass.py --target h100-sxm-80gb
"""

import argparse

from autotune import get_target
from autotune.internal import Prober
from autotune.models import vgg_setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="h100-sxm-80gb")
    parser.add_argument("--batches", default="440,520,560,600,640,720")
    args = parser.parse_args()
    target = get_target(args.target)
    setup = vgg_setup("vgg16")
    probers = {
        on: Prober(setup.step, setup.args_for_batch, sharding=target.sharding(), xla_remat_pass=on)
        for on in (False, True)
    }
    print(
        f"{target.description}: card memory "
        f"{target.memory_bytes:,} B; default budget {target.default_budget_bytes:,} B"
    )
    print("| batch | need, pass off (B) | need, pass on (B) |")
    print("|---:|---:|---:|")
    for batch in map(int, args.batches.split(",")):
        off, on = (probers[flag](batch).need_bytes for flag in (False, True))
        print(f"| {batch} | {off:,} | {on:,} |", flush=True)


if __name__ == "__main__":
    main()
