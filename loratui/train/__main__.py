"""`python -m loratui.train RUN_DIR`: the trainer process entry point."""

import sys

from loratui.train.process import main

sys.exit(main())
