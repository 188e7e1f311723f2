"""`python -m loratui` runs the command line."""

import sys

from loratui.cli import main

sys.exit(main())
