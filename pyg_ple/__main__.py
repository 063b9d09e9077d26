import sys

from pyg_ple.bench.cli import main

sys.exit(main())
