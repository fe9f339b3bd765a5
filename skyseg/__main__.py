"""``python -m skyseg``: the command line."""

import sys

from skyseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
