"""Double-click entry: `python app.py [options]` is `python -m easyphoto_app ui [options]`."""

import sys

from easyphoto_app.cli import main

if __name__ == "__main__":
    sys.exit(main(["ui", *sys.argv[1:]]))
