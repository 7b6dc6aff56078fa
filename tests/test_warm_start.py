"""The tuner's compile at the answer serves the training job from JAX's
persistent compilation cache."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_compilation_cache_dir", sys.argv[1])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    sys.path.insert(0, "tests")
    from steps import mlp_args, mlp_step, need_at

    def entries():
        return sorted(p.name for p in __import__("pathlib").Path(sys.argv[1]).iterdir()
                      if p.name.startswith("jit_mlp_step"))

    if sys.argv[2] == "tune":
        import autotune
        result = autotune.find_max_batch(mlp_step, mlp_args, donate_argnums=(0,),
                                         budget_bytes=need_at(mlp_step, mlp_args, 64),
                                         multiple_of=8, max_batch=256)
        print(result.batch)
    else:
        batch = int(sys.argv[3])
        before = entries()
        jax.config.update("jax_compiler_enable_remat_pass", False)
        params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), mlp_args(batch)[0])
        x, y = jnp.zeros((batch, 64)), jnp.zeros((batch,), jnp.int32)
        jax.block_until_ready(jax.jit(mlp_step, donate_argnums=(0,))(params, x, y))
        print("hit" if entries() == before and before else "miss")
""")


def run(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1]


def test_training_step_hits_the_cache_the_tuner_filled(tmp_path):
    batch = run(tmp_path, "tune")
    assert run(tmp_path, "train", batch) == "hit"


def test_an_empty_cache_misses(tmp_path):
    assert run(tmp_path, "train", 64) == "miss"
