"""Renders the output blocks of README.md and docs/*.md from the command.

A block to render follows a marker line:

    <!-- output: autotune ARGS -->          the command's stdout
    <!-- output: autotune ARGS | lines 1-6,20-25 -->   those lines of it
    <!-- json: autotune ARGS --json {json} -->        the report it writes,
                                                        probes after the first left out
    <!-- reference: autotune --help -->     the parser's help, every flag

Each command runs from the repository root as `python -m autotune`, with a
result cache of its own (every answer compiled afresh). `--check` rewrites
nothing and exits 1 if a block differs from the current output (timings
aside). The default run takes about a minute on a 2-core CPU machine.

    python scripts/render_docs.py [--check] [FILE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- (output|json|reference): (.+?) -->\n```(\w*)\n.*?^```\n", re.M | re.S)
COLUMNS = "100"  # the width --help is wrapped to


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def reference() -> str:
    """`autotune --help` as the parser writes it, with the default workload's flags."""
    from autotune import cli

    os.environ["COLUMNS"] = COLUMNS
    return cli.help_text()


def run(command: str, cache: Path) -> str:
    argv = shlex.split(command)
    assert argv[0] == "autotune", command
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "COLUMNS": COLUMNS}
    done = subprocess.run(
        [sys.executable, "-m", "autotune", *argv[1:]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{command!r} exited {done.returncode}:\n{done.stderr}")
    return done.stdout.strip()


def select(text: str, ranges: str) -> str:
    """Lines `ranges` ("1-6,20-25", 1-based) of `text`, "..." between them."""
    lines, kept = text.splitlines(), []
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        if kept:
            kept.append("...")
        kept.extend(lines[int(first) - 1 : int(last or first)])
    return "\n".join(kept)


def shortened_report(path: Path) -> str:
    data = json.loads(path.read_text())
    for row in data["results"]:
        row["probes"] = row["probes"][:1]
    return json.dumps(data, indent=2)


def render(kind: str, command: str, cache: Path) -> str:
    if kind == "reference":
        return reference()
    if kind == "json":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tune.json"
            run(command.replace("{json}", str(path)), cache)
            return shortened_report(path)
    command, _, ranges = command.partition(" | lines ")
    text = run(command, cache)
    return select(text, ranges) if ranges else text


def untimed(text: str) -> str:
    """`text` without what changes from run to run: seconds."""
    text = re.sub(r"\d+\.\d s\b", "_ s", text)
    text = re.sub(r'"(compile_)?seconds": [\d.e-]+', r'"\1seconds": _', text)
    return re.sub(r"(?m)\s+\d+\.\d$", " _", text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="compare; rewrite nothing")
    p.add_argument("files", nargs="*", type=Path, help="default: README.md and docs/*.md")
    args = p.parse_args(argv)
    stale = []
    for page in args.files or pages():
        text = page.read_text()

        def block(match: re.Match[str], page: Path = page) -> str:
            kind, command, lang = match.groups()
            with tempfile.TemporaryDirectory() as cache:
                print(f"{page.name}: {command}", file=sys.stderr)
                body = render(kind, command, Path(cache))
            new = f"<!-- {kind}: {command} -->\n```{lang}\n{body}\n```\n"
            if untimed(new) != untimed(match.group(0)):
                stale.append(f"{page.name}: {command}")
            return new

        rendered = MARKER.sub(block, text)
        if not args.check and rendered != text:
            page.write_text(rendered)
    for item in stale:
        print(("stale: " if args.check else "rendered: ") + item, file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
