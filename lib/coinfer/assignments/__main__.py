"""``python -m coinfer.assignments``: see :mod:`coinfer.assignments`."""

import sys

from . import main

sys.exit(main())
