import sys

from bridge_osc.cli import main

sys.exit(main())
