"""``python -m sandbox`` is the ``stack`` command."""

import sys

from .cli import main

sys.exit(main())
