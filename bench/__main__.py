"""`python -m bench ...`: the command line (see bench.cli)."""

import sys

from bench.cli import main

sys.exit(main())
