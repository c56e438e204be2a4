"""`python -m knowshift.cli`: the command line."""

import sys

from knowshift.cli import main

sys.exit(main())
