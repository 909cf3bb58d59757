"""`python -m bench`: the whole suite (flags: --quick, --only NAME, --repeat N)."""

from bench.cli import main

raise SystemExit(main())
