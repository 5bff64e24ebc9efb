"""Allow ``python -m pevl``."""

import sys

from pevl.cli import main

sys.exit(main())
