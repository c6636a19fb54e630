import sys

from pykbroker.cli.broker import main

sys.exit(main())
