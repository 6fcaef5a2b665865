"""``python -m engine.cli.jsonprogress [-w W] COMMAND ...``: a CLI command with machine-readable progress.

Why: a front end that launches ``build`` or ``propagate`` as a separate process (so its own
loop never blocks, and a crash of the job cannot take it down) still wants a progress bar.
Commands report progress through ``engine.core.progress.progress``; this entry point makes
that report JSON lines on stdout (``report_json_lines``), runs the command, then writes
``{"exit": code}``. Other stdout lines (the command's own summary) pass through unchanged.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from engine.core.progress import report_json_lines


def main(argv: Sequence[str] | None = None) -> int:
    report_json_lines()
    from engine.cli.main import main as cli_main

    code = cli_main(argv)
    print(json.dumps({"exit": code}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
