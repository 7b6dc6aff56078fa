"""A remat plan (one policy per block, in model order) and the space of them
a workload family can build.

A `RematSpace` names a model's blocks, in order, the policies each may take,
and builds the `Workload` of any plan. The policies are "none" (nothing
recomputed) or `jax.checkpoint_policies` names; a space lists the ones its
search may use from the least recompute to the most.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from autotune._core import checks as check
from autotune._core.errors import TuneError
from autotune._plans.policies import NONE, check_policy
from autotune._workloads.workload import Workload


@dataclasses.dataclass(frozen=True)
class RematPlan:
    """The policy of every block of a model, in model order ("none": the
    block's activations are saved for the backward pass, as without remat)."""

    policies: tuple[tuple[str, str], ...]  # (block, policy), in model order

    def __post_init__(self) -> None:
        names = [block for block, _ in self.policies]
        if len(set(names)) != len(names):
            raise TuneError(f"`blocks` (={names!r}) names a block twice")
        for block, policy in self.policies:
            check_policy(f"plan[{block!r}]", policy)

    @property
    def blocks(self) -> tuple[str, ...]:
        return tuple(block for block, _ in self.policies)

    @property
    def recomputed(self) -> tuple[str, ...]:
        """The blocks that recompute, in model order."""
        return tuple(block for block, policy in self.policies if policy != NONE)

    def __getitem__(self, block: str) -> str:
        return dict(self.policies)[block]

    def __iter__(self) -> Iterator[str]:
        return iter(self.blocks)

    def to_dict(self) -> dict[str, str]:
        """Block -> policy, every block listed, in model order."""
        return dict(self.policies)

    def text(self) -> str:
        """ "stage1=nothing_saveable, stage2=dots_saveable", or "none" when nothing recomputes."""
        chosen = [f"{b}={p}" for b, p in self.policies if p != NONE]
        return ", ".join(chosen) if chosen else NONE

    def short(self) -> str:
        """ "nothing_saveable: stage1+stage2": the blocks under each policy."""
        by_policy: dict[str, list[str]] = {}
        for block, policy in self.policies:
            if policy != NONE:
                by_policy.setdefault(policy, []).append(block)
        return "; ".join(f"{p}: {'+'.join(bs)}" for p, bs in by_policy.items()) or NONE

    def with_policies(self, changes: Mapping[str, str]) -> RematPlan:
        return RematPlan(tuple((b, changes.get(b, p)) for b, p in self.policies))


@dataclasses.dataclass(frozen=True)
class RematSpace:
    """The plans a workload family can build.

    Attributes:
        blocks: the blocks that may rematerialize, in model order, by the
            names `--why` gives them (their named scopes).
        build: plan -> the `Workload` that trains with it.
        policies: what a block may take besides "none", from the least
            recompute to the most (a search frees memory with the last).
        label: names the family; each plan's workload is labelled with it
            and its plan.
    """

    blocks: Sequence[str]
    build: Callable[[RematPlan], Workload]
    policies: Sequence[str] = ("nothing_saveable",)
    label: str = ""

    def __post_init__(self) -> None:
        blocks = self.blocks
        if isinstance(blocks, str) or not isinstance(blocks, Sequence) or not blocks:
            raise TuneError(
                f"`blocks` (={check.shown(blocks)}) must be a non-empty sequence of block names"
            )
        for block in blocks:
            if not isinstance(block, str) or not block:
                raise TuneError(f"`blocks` (={check.shown(blocks)}) holds {block!r}: not a name")
        if len(set(blocks)) != len(blocks):
            raise TuneError(f"`blocks` (={check.shown(blocks)}) names a block twice")
        policies = self.policies
        if isinstance(policies, str):
            policies = (policies,)
        if not isinstance(policies, Sequence) or not policies:
            raise TuneError(
                f"`policies` (={check.shown(self.policies)}) must name at least one policy"
            )
        for policy in policies:
            if policy == NONE:
                raise TuneError(
                    f"`policies` (={check.shown(self.policies)}) lists {NONE!r}: every block "
                    "may take it already; list the policies that recompute"
                )
            check_policy("policies", policy)
        if len(set(policies)) != len(policies):
            raise TuneError(f"`policies` (={check.shown(self.policies)}) names a policy twice")
        check.function("build", self.build, " (RematPlan) -> Workload")
        check.string("label", self.label)
        object.__setattr__(self, "blocks", tuple(blocks))
        object.__setattr__(self, "policies", tuple(policies))

    @property
    def strongest(self) -> str:
        """The policy that recomputes the most."""
        return self.policies[-1]

    def plan(self, chosen: Mapping[str, str] | None = None) -> RematPlan:
        """The plan with `chosen` (block -> policy) and "none" elsewhere."""
        return complete_plan(chosen or {}, self.blocks)

    def everywhere(self, policy: str | None = None) -> RematPlan:
        """Every block under `policy` (default: the strongest)."""
        return self.plan({b: policy or self.strongest for b in self.blocks})

    def workload(self, plan: RematPlan) -> Workload:
        """The workload of `plan`, labelled with it and carrying it."""
        if plan.blocks != self.blocks:
            raise TuneError(
                f"`plan` (={plan.text()!r}) is over blocks {', '.join(plan.blocks)}; this "
                f"space's are {', '.join(self.blocks)}"
            )
        try:
            workload = self.build(plan)
        except TuneError:
            raise
        except Exception as e:
            raise TuneError(
                f"`build` (={check.shown(self.build)}) raised for plan {plan.text()!r}: "
                f"{type(e).__name__}: {e}"
            ) from e
        if not isinstance(workload, Workload):
            raise TuneError(
                f"`build` (={check.shown(self.build)}) returned {check.shown(workload)} for "
                f"plan {plan.text()!r}; it must return an autotune.Workload"
            )
        label = f"{self.label or workload.label or 'step'} remat[{plan.text()}]"
        return dataclasses.replace(workload, label=label, remat_plan=plan.to_dict())


def complete_plan(chosen: Any, blocks: Sequence[str], name: str = "plan") -> RematPlan:
    """The plan over `blocks` with `chosen` (block -> policy) and "none" elsewhere."""
    if not isinstance(chosen, Mapping):
        raise TuneError(f"`{name}` (={check.shown(chosen)}) must map block names to policies")
    unknown = [b for b in chosen if b not in blocks]
    if unknown:
        raise TuneError(
            f"`{name}` (={check.shown(dict(chosen))}) names {unknown[0]!r}, a block this "
            f"workload lacks; its blocks are {', '.join(blocks) or 'none'}"
        )
    for block, policy in chosen.items():
        check_policy(f"{name}[{block!r}]", policy)
    return RematPlan(tuple((b, chosen.get(b, NONE)) for b in blocks))


def parse_plan(text: str) -> dict[str, str]:
    """ "stage1=nothing_saveable,stage2=dots_saveable" as a mapping (the
    command's `--remat-plan`); "none" is the empty plan."""
    text = text.strip()
    if text in ("", NONE):
        return {}
    chosen: dict[str, str] = {}
    for item in text.split(","):
        block, sep, policy = item.strip().partition("=")
        if not sep or not block.strip() or not policy.strip():
            raise TuneError(
                f"`--remat-plan` (={text!r}) must be BLOCK=POLICY pairs, comma-separated, e.g. "
                "stage1=nothing_saveable"
            )
        if block.strip() in chosen:
            raise TuneError(f"`--remat-plan` (={text!r}) names {block.strip()!r} twice")
        chosen[block.strip()] = check_policy(f"--remat-plan {block.strip()}", policy.strip())
    return chosen
