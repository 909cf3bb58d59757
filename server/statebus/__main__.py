"""`python -m statebus ...` is the `statebus` command."""

import sys

from statebus.cli import main

sys.exit(main())
