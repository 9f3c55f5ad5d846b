"""`python -m abistamp`: the command line (see abistamp.cli)."""

import sys

from .cli import main

sys.exit(main())
