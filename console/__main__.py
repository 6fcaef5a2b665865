"""`python -m console`: the console without its entry point script (`skydeck`), for a checkout
or an environment whose scripts directory is not on PATH; the same ``main``."""

import sys

from console.app import main

sys.exit(main())
