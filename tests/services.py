"""What the service scripts (tests/slurm/cluster.sh, tests/postgres/cluster.sh) leave for the
tests: an ``env`` file of KEY=VALUE lines in their scratch directory, read the same way by
both fixtures."""

from __future__ import annotations

from pathlib import Path


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of ``path``; empty when the file is not there (no service yet)."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return out
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out
