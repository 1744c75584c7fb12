"""`python -m shopipe` runs the CLI (the dev stack starts services this way)."""

import sys

from shopipe.cli import main

sys.exit(main())
