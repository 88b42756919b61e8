"""MatchGen Viewer. ``python main.py`` opens the viewer on the bundled demo study; ``--help`` lists the rest."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
