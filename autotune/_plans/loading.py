"""The remat space a `--workload MODULE:ATTR` names, for the command's plan
searches (`--fit-batch`, `--remat-frontier`, `--remat-plan`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autotune._core.errors import TuneError
from autotune._plans.plan import RematSpace
from autotune._workloads.workload import refuse_raised, workload_attribute


def load_space(spec: str, kwargs: Mapping[str, Any], flag: str) -> RematSpace:
    """ATTR itself if it is a `RematSpace`; else what its `remat_space`
    returns, called with `kwargs`; else what ATTR returns, called with them.
    `flag` names the option that asked for it."""
    attr, value = workload_attribute(spec)
    if isinstance(value, RematSpace):
        if kwargs:
            raise TuneError(
                f"`--workload` (={spec!r}): keywords {dict(kwargs)!r} were given, and {attr} "
                "is a RematSpace, which takes none"
            )
        return value
    maker = getattr(value, "remat_space", value)
    named = f"{attr}.remat_space" if maker is not value else attr
    if callable(maker):
        try:
            value = maker(**dict(kwargs))
        except TuneError:
            raise
        except (Exception, SystemExit, KeyboardInterrupt) as e:
            refuse_raised(e, f"`--workload` (={spec!r}): calling {named}")
        if isinstance(value, RematSpace):
            return value
    raise TuneError(
        f"`{flag}` searches remat plans, and `--workload` (={spec!r}) names none: {attr} must "
        "be an autotune.RematSpace, return one, or carry `remat_space`, a callable that "
        "returns one"
    )
