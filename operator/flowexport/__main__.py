"""`python -m flowexport`."""

import sys

from flowexport.cli import main

sys.exit(main())
