import sys

from pyg_ple.cli import main

sys.exit(main())
