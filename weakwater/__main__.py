import sys

from weakwater.cli import main

sys.exit(main())
