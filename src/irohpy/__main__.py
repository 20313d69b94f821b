import sys

from irohpy.cli.main import main

sys.exit(main())
