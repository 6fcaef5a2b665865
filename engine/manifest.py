"""MD5 manifests in md5sum format (``<32 hex>  <name>``), as fcopy packages carry them.

A delivery is complete only when its manifest is present and every file verifies; the
manifest is always written last (temporary name, then rename) so its presence means the
files it lists are complete.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from engine.atomic import atomic_write_bytes
from engine.errors import BadInput

MANIFEST_NAME = "MANIFEST.md5"
_LINE = re.compile(r"^([0-9a-fA-F]{32}) [ *](.+)$")
_BLOCK = 4 << 20


def md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def format_lines(entries: Iterable[tuple[str, str]]) -> bytes:
    return "".join(f"{digest}  {name}\n" for name, digest in entries).encode()


def write(directory: Path, names: Iterable[str], manifest: Path | None = None) -> Path:
    """Hash ``names`` (relative to ``directory``) and write the manifest atomically."""
    target = manifest or directory / MANIFEST_NAME
    entries = [(n, md5_file(directory / n)) for n in sorted(names)]
    atomic_write_bytes(target, format_lines(entries))
    return target


def safe_name(name: str, manifest: Path) -> str:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or name.strip() != name or not name:
        raise BadInput(f"manifest names unsafe path {name!r}", manifest)
    return name


def parse(manifest: Path) -> dict[str, str]:
    """name -> md5 hex; raises BadInput on a malformed line or unsafe name."""
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"cannot read manifest: {err}", manifest) from None
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise BadInput(f"malformed manifest line {lineno}: {line[:60]!r}", manifest)
        out[safe_name(m.group(2), manifest)] = m.group(1).lower()
    if not out:
        raise BadInput("manifest lists no files", manifest)
    return out


def verify(directory: Path, manifest: Path | None = None) -> dict[str, str]:
    """Check every listed file; raise BadInput naming the first bad one. Returns the entries."""
    mpath = manifest or directory / MANIFEST_NAME
    entries = parse(mpath)
    for name, digest in entries.items():
        f = directory / name
        if not f.is_file():
            raise BadInput(f"listed in {mpath.name} but missing", f)
        actual = md5_file(f)
        if actual != digest:
            raise BadInput(f"checksum mismatch: manifest {digest}, file {actual}", f)
    return entries
