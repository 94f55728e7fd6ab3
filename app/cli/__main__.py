"""`python -m app.cli`: the `accord` command."""

import sys

from app.cli import main

sys.exit(main())
