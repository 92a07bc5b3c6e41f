"""``python -m bridge.adapters.trackio``: the store process (see :mod:`.store`)."""

import sys

from bridge.adapters.trackio.store import main

sys.exit(main())
