"""``python -m app.cli``: the ``matchgen`` command, without relying on a path to ``main.py``."""

import sys

from app.cli import main

sys.exit(main())
