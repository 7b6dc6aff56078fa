"""What to tune: a train step and the arguments it takes at each batch size.

A `Workload` is what the tuner compiles (`step` lowered from
`args_for_batch(batch)`), what it calls the answer (`label`), and, when it
can build them, the real arrays that run the step (`real_args`, for
`--verify` and `--time`). The command loads one from `MODULE:ATTR`, as
`python -m` finds a module, with `load_workloads`.

A callable ATTR may carry `command_flags`, a sequence of `WorkloadFlag`:
the command's own flags for its keywords (`--image-size 160` for
`--workload-arg image_size=160`). The command knows no workload; it asks
the one it loads (`workload_flags`).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from autotune._core import checks as check
from autotune._core.errors import TuneError
from autotune._core.signals import received
from autotune._workloads.estimate import Estimate

ArgsForBatch = Callable[[int], Sequence[Any]]


@dataclasses.dataclass(frozen=True)
class Workload:
    """A train step to tune, and how to build its arguments for a batch size.

    Attributes:
        step: the train step, plain or already jitted.
        args_for_batch: batch size -> the step's positional arguments, as
            pytrees of `jax.ShapeDtypeStruct` (arrays are accepted and never
            copied). Nothing is allocated.
        donate_argnums: arguments the step may overwrite with its outputs,
            as in `jax.jit`; a jitted step is wrapped so they are donated.
        estimate: an analytical estimate; it places the first compiles.
        label: names the answer (a model, a remat choice).
        real_args: batch size -> real arrays for the same arguments, to run
            the step (`--verify`, `--time`); None if the workload cannot.
        notes: answer (`autotune.TuneResult`) -> more text about it, which
            the command prints after the answer's own; None for none.
        remat_plan: the rematerialization the step trains with, block ->
            policy in model order ("none" where nothing is recomputed), as
            `autotune.RematSpace` builds it; recorded with the answer.
    """

    step: Callable[..., Any]
    args_for_batch: ArgsForBatch
    donate_argnums: int | tuple[int, ...] = ()
    estimate: Estimate | None = None
    label: str = ""
    real_args: ArgsForBatch | None = None
    notes: Callable[[Any], str] | None = None
    remat_plan: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if not (callable(self.step) or hasattr(self.step, "lower")):
            raise TuneError(
                f"`step` (={self.step!r}) must be callable (a function or a jitted one)"
            )
        if not callable(self.args_for_batch):
            raise TuneError(f"`args_for_batch` (={self.args_for_batch!r}) must be callable")
        if self.real_args is not None and not callable(self.real_args):
            raise TuneError(f"`real_args` (={self.real_args!r}) must be callable or None")
        if self.notes is not None and not callable(self.notes):
            raise TuneError(f"`notes` (={self.notes!r}) must be callable or None")
        if self.estimate is not None and not isinstance(self.estimate, Estimate):
            raise TuneError(
                f"`estimate` (={self.estimate!r}) must be an autotune.Estimate or None "
                "(autotune.estimate_step makes one)"
            )
        if not isinstance(self.label, str):
            raise TuneError(f"`label` (={self.label!r}) must be a string")
        object.__setattr__(self, "donate_argnums", as_argnums(self.donate_argnums))
        if self.remat_plan is not None:
            plan = self.remat_plan
            if not isinstance(plan, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in plan.items()
            ):
                raise TuneError(
                    f"`remat_plan` (={check.shown(plan)}) must map block names to policy names"
                )
            object.__setattr__(self, "remat_plan", dict(plan))

    def jitted(self) -> Any:
        """The step under `jax.jit`, donating `donate_argnums`."""
        return jit_step(self.step, self.donate_argnums)


def as_argnums(value: Any) -> tuple[int, ...]:
    items = (value,) if not isinstance(value, (tuple, list)) else tuple(value)
    try:
        return tuple(check.integer("donate_argnums", item, minimum=0) for item in items)
    except TuneError:
        raise TuneError(
            f"`donate_argnums` (={value!r}) must be a non-negative integer or a tuple of them"
        ) from None


def jit_step(step: Callable[..., Any], donate_argnums: tuple[int, ...] = ()) -> Any:
    """`step` jitted with `donate_argnums` donated.

    A step that is jitted already keeps its own donation; given
    `donate_argnums`, it is jitted once more around them, which donates
    them (XLA inlines the inner call).
    """
    if hasattr(step, "lower") and not donate_argnums:
        return step
    return jax.jit(step, donate_argnums=donate_argnums)


def as_workload(item: Any, where: str) -> Workload:
    """A `Workload`, or a `(step, args_for_batch)` pair made into one."""
    if isinstance(item, Workload):
        return item
    if isinstance(item, tuple) and len(item) == 2 and all(callable(part) for part in item):
        return Workload(*item)
    raise TuneError(
        f"{where} is {_describe(item)}; it must be an autotune.Workload or a "
        "(step, args_for_batch) pair"
    )


def load_workloads(spec: str, kwargs: Mapping[str, Any] | None = None) -> tuple[Workload, ...]:
    """The workloads named by `spec`, "MODULE:ATTR".

    MODULE is imported as `python -m` would, the current directory first on
    the path. ATTR (dotted names allowed) is a `Workload`, a
    `(step, args_for_batch)` pair, a sequence of workloads, or a callable
    returning one of those; the callable is called with `kwargs` (none by
    default). A workload without a label is labelled ATTR.
    """
    attr, value = workload_attribute(spec)
    if callable(value) and not isinstance(value, Workload):
        try:
            value = value(**dict(kwargs or {}))
        except TuneError:
            raise
        except (Exception, SystemExit, KeyboardInterrupt) as e:
            refuse_raised(e, f"`--workload` (={spec!r}): calling {attr}")
    elif kwargs:
        raise TuneError(
            f"`--workload` (={spec!r}): keywords {dict(kwargs)!r} were given, and {attr} "
            "is not a callable that takes them"
        )
    items = value if _is_sequence_of_workloads(value) else [value]
    where = f"`--workload` (={spec!r}): {attr}"
    workloads = [as_workload(item, where) for item in items]
    if not workloads:
        raise TuneError(f"{where} gave no workload")
    labelled = tuple(
        w
        if w.label
        else dataclasses.replace(w, label=attr if len(workloads) == 1 else f"{attr}[{i}]")
        for i, w in enumerate(workloads)
    )
    labels = [w.label for w in labelled]
    if len(set(labels)) != len(labels):
        raise TuneError(f"{where} gave workloads with the same label: {labels}")
    return labelled


def workload_attribute(spec: str) -> tuple[str, Any]:
    """(ATTR, its value) of "MODULE:ATTR", the module imported, nothing called."""
    module_name, attr = _split_spec(spec)
    value: Any = _import(module_name, spec)
    for part in attr.split("."):
        if not hasattr(value, part):
            raise TuneError(
                f"`--workload` (={spec!r}): module {module_name!r} has no attribute {attr!r}"
            )
        value = getattr(value, part)
    return attr, value


@dataclasses.dataclass(frozen=True)
class WorkloadFlag:
    """A command-line flag of one workload: shorthand for one of its keywords.

    Attributes:
        flag: the flag, e.g. "--image-size".
        keyword: the keyword of the workload callable it gives, e.g. "image_size".
        help: what the command's `--help` says of it.
        parse: the flag's text -> the keyword's value, raising `ValueError`
            with the rule broken; None for a switch (no text; True when given).
        metavar: the name of its value in `--help`.
    """

    flag: str
    keyword: str
    help: str = ""
    parse: Callable[[str], Any] | None = str
    metavar: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.flag, str) and self.flag.startswith("--") and len(self.flag) > 2):
            raise TuneError(f"`flag` (={self.flag!r}) must be a long option, e.g. '--image-size'")
        if not (isinstance(self.keyword, str) and self.keyword.isidentifier()):
            raise TuneError(f"`keyword` (={self.keyword!r}) must be a Python identifier")
        if self.parse is not None and not callable(self.parse):
            raise TuneError(f"`parse` (={self.parse!r}) must be callable or None")

    def value(self, text: str | None) -> Any:
        """The keyword's value for the flag's text (None for a switch given)."""
        if self.parse is None:
            return True
        try:
            return self.parse(text)
        except (ValueError, TypeError) as e:
            raise TuneError(f"`{self.flag}` (={text!r}) {e}") from None


def workload_flags(spec: str) -> tuple[WorkloadFlag, ...]:
    """The `command_flags` that the ATTR of "MODULE:ATTR" carries, or none."""
    attr, value = workload_attribute(spec)
    flags = tuple(getattr(value, "command_flags", ()))
    for flag in flags:
        if not isinstance(flag, WorkloadFlag):
            raise TuneError(
                f"`--workload` (={spec!r}): {attr}.command_flags holds {_describe(flag)}; "
                "each must be an autotune.WorkloadFlag"
            )
    return flags


def _is_sequence_of_workloads(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, Workload) for v in value)


def _split_spec(spec: str) -> tuple[str, str]:
    module, sep, attr = str(spec).partition(":")
    if not sep or not module or not attr:
        raise TuneError(
            f"`--workload` (={spec!r}) must be MODULE:ATTR, e.g. my_train:workload "
            "(MODULE importable from the current directory)"
        )
    return module, attr


def _import(module_name: str, spec: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.split(".")[0] == e.name.split(".")[0]:
            raise TuneError(
                f"`--workload` (={spec!r}): no module named {module_name!r} in the "
                f"current directory ({cwd}) or on the Python path"
            ) from e
        raise TuneError(
            f"`--workload` (={spec!r}): importing {module_name!r} failed: {type(e).__name__}: {e}"
        ) from e
    except (Exception, SystemExit, KeyboardInterrupt) as e:
        refuse_raised(e, f"`--workload` (={spec!r}): importing {module_name!r}")


def refuse_raised(e: BaseException, doing: str) -> None:
    """What the workload's code raised, as a TuneError. SystemExit and
    KeyboardInterrupt too (a workload must neither exit the command nor
    stand for a Ctrl-C), unless a signal is behind the KeyboardInterrupt or
    no handler of the command's can tell (`autotune._core.signals`)."""
    if isinstance(e, KeyboardInterrupt):
        signalled = received()
        if signalled is None or signalled.signum is not None:
            raise e
        raise TuneError(f"{doing} raised KeyboardInterrupt, and no signal came") from None
    if isinstance(e, SystemExit):
        raise TuneError(
            f"{doing} raised SystemExit({e.code!r}); a workload must not exit"
        ) from None
    raise TuneError(f"{doing} raised {type(e).__name__}: {e}") from e


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}" + ("..." if len(text) > 60 else "")
