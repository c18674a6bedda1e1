import sys

from rait.cli import main

sys.exit(main())
