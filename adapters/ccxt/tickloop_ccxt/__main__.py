"""`python3 -m tickloop_ccxt`: the adapter (see tickloop_ccxt.adapter)."""

import sys

from tickloop_ccxt.adapter import main

sys.exit(main())
