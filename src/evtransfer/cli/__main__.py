"""`python -m evtransfer.cli`."""

import sys

from evtransfer.cli import main

sys.exit(main())
