import sys

from easyphoto_app.cli import main

sys.exit(main())
