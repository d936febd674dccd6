"""``python -m sandbox`` is the ``stack`` command."""

import sys

from .cli.main import main

sys.exit(main())
