"""`python -m autotune`: the command."""

from autotune.cli import entry

entry()
