"""`python -m knowshift ...`, and so `accelerate launch -m knowshift train ...`."""

import sys

from knowshift.cli import main

sys.exit(main())
