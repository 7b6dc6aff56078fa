"""`python -m autotune`: the command."""

import sys

from autotune.cli import main

sys.exit(main())
