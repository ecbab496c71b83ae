import sys

from fwd.cli import main

sys.exit(main())
