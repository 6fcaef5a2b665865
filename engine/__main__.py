"""`python -m engine` is `skydeck-engine` (used under mpiexec, where entry points may be absent)."""

import sys

from engine.cli.main import main

sys.exit(main())
