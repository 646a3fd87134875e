"""``python -m adadecode`` runs the command-line interface."""

import sys

from adadecode.cli import main

if __name__ == "__main__":
    sys.exit(main())
