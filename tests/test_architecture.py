"""The shape of the package: no import cycle, target kinds told apart only by
the targets package, records that do not import the engine, and a wheel
that installs."""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys
import venv
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "autotune"
TARGETS = PACKAGE / "_targets"
# String values a target kind is told by (`platform`, a TPU generation's device).
KINDS = {"tpu", "cuda", "gpu", "cpu", "rocm"}
# Records: what a result is made of. They import no compile engine.
RECORDS = ("autotune._compile.records", "autotune._results.result", "autotune._core.budget")
ENGINE = ("autotune._compile.prober", "autotune._compile.dump", "autotune._tune")


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Ids of the import nodes under `if TYPE_CHECKING:`."""
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                for sub in ast.walk(inner):
                    hidden.add(id(sub))
    return hidden


def _imports(name: str, path: pathlib.Path, modules: set[str]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its code (not
    under `if TYPE_CHECKING:`): `from a.b import c` is `a.b.c` when that is a
    module, else `a.b` (its `__init__`)."""
    tree = ast.parse(path.read_text())
    hidden = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in modules:
                    found.add(full)
                elif base in modules:
                    found.add(base)
    found.discard(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, as the modules along it; None without one."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle(graph):
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or ())


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_submodule_imports_the_package_it_belongs_to(graph):
    offenders = {
        (name, imported)
        for name, imports in graph.items()
        for imported in imports
        if name.startswith(imported + ".")
    }
    assert not offenders


def test_records_do_not_import_the_engine(graph):
    def reach(name: str, seen: set[str]) -> set[str]:
        for nxt in graph.get(name, ()):
            if nxt not in seen:
                seen.add(nxt)
                reach(nxt, seen)
        return seen

    for record in RECORDS:
        engine = {m for m in reach(record, set()) if m.startswith(ENGINE)}
        assert not engine, f"{record} imports {sorted(engine)}"


def _kind_checks(path: pathlib.Path) -> list[str]:
    """Comparisons of a target's kind: with `platform`, or with a kind's name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        names = {s.attr if isinstance(s, ast.Attribute) else getattr(s, "id", None) for s in sides}
        literals = {s.value for s in sides if isinstance(s, ast.Constant)}
        for s in sides:
            if isinstance(s, (ast.Tuple, ast.Set, ast.List)):
                literals |= {e.value for e in s.elts if isinstance(e, ast.Constant)}
        if "platform" in names or literals & KINDS:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_target_kinds_are_told_apart_only_in_the_targets_package():
    outside = [p for p in PACKAGE.rglob("*.py") if TARGETS not in p.parents]
    checks = [line for p in outside for line in _kind_checks(p)]
    assert not checks, "\n".join(checks)
    inside = [line for p in TARGETS.rglob("*.py") for line in _kind_checks(p)]
    assert inside, "the finder finds no kind check even where they belong"


def test_scripts_import_nothing_private():
    private = []
    for path in (ROOT / "scripts").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                if any(part.startswith("_") for n in names[:1] for part in n.split(".")[1:]):
                    private.append(f"{path.name}:{node.lineno}: from {node.module}")
                elif node.module == "autotune" and any(a.name.startswith("_") for a in node.names):
                    private.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert not private, "\n".join(private)


def test_pyproject_lists_every_package():
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    present = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")} | {
        "autotune.models"
    }
    assert listed == present


@pytest.mark.skipif(
    os.environ.get("AUTOTUNE_SKIP_WHEEL") == "1", reason="AUTOTUNE_SKIP_WHEEL=1 is set"
)
def test_a_built_wheel_installs_and_imports_in_a_fresh_venv(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
         str(wheels), str(ROOT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in _modules().values():
        assert str(module.relative_to(ROOT)) in names
    env = tmp_path / "env"
    # The fresh venv sees this one's packages (jax, flax) but not the checkout.
    venv.create(env, system_site_packages=True, with_pip=False)
    python = env / "bin" / "python"
    site = subprocess.run(
        [sys.executable, "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (env_site,) = (env / "lib").glob("python*/site-packages")
    (env_site / "outer.pth").write_text(site + "\n")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(env_site)
    probe = (
        "import autotune, autotune.cli, autotune.nnx, autotune.models, autotune.internal;"
        "import autotune._targets.tpu, autotune._command.verify;"
        "print(autotune.__file__)"
    )
    ran = subprocess.run(
        [str(python), "-I", "-c", probe], capture_output=True, text=True, check=False, cwd=tmp_path,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert str(env_site) in ran.stdout
