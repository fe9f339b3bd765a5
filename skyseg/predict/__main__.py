"""``python -m skyseg.predict``: the same arguments as ``skyseg predict``."""

import sys

from skyseg.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("predict"))
