import sys

from sunsim.cli import main

sys.exit(main())
