"""``python -m server`` is ``m2ugen``."""

import sys

from server.cli import main

sys.exit(main())
