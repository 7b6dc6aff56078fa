"""Run the `autotune` command from a checkout: python scripts/autotune.py --help."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autotune.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
