"""``python -m server.cli``: the same as the ``m2ugen`` command."""

import sys

from server.cli import main

sys.exit(main())
