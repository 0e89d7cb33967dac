import sys

from jupyter_tether.cli import main

sys.exit(main())
