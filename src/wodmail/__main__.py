"""`python -m wodmail`: the same as the `wodmail` command."""

import sys

from wodmail.cli import main

sys.exit(main())
