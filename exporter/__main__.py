"""`python -m syncwatch …`, the same as the `syncwatch` command."""

import sys

from syncwatch.cli.main import main

sys.exit(main())
