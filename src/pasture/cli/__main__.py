"""`python -m pasture.cli ...`: the same as the `pasture` command."""

import sys

from pasture.cli import main

sys.exit(main())
