"""MD5 manifests in md5sum format (``<32 hex>  <name>``), as fcopy packages carry them.

A delivery is complete only when its manifest is present and every file verifies; the
manifest is always written last (temporary name, then rename) so its presence means the
files it lists are complete.

A manifest comes from outside, so it is a boundary parser: read bounded, names taken
exactly as listed (a name that only normalising would make safe is rejected, never
rewritten), each name once; listed files are opened without following links and must be
regular files, so a manifest can never make us read something outside the delivery.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from engine.core.atomic import atomic_write_bytes
from engine.core.errors import BadInput
from engine.core.inputs import open_regular

MANIFEST_NAME = "MANIFEST.md5"
MAX_MANIFEST_BYTES = 4 << 20  # ~40,000 entries; a manifest is read whole, so it is bounded
_LINE = re.compile(r"([0-9a-fA-F]{32}) [ *](.+)")
_BLOCK = 4 << 20


def md5_file(path: Path) -> str:
    """MD5 of a regular file (symbolic links and special files are BadInput, not followed)."""
    h = hashlib.md5(usedforsecurity=False)
    with open(open_regular(path), "rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def format_lines(entries: Iterable[tuple[str, str]], manifest: Path | str = MANIFEST_NAME) -> bytes:
    """md5sum lines for ``(name, digest)`` pairs; a name ``parse`` would refuse (a line break
    in it, say, which would read back as another name) is refused here too (BadInput)."""
    return "".join(f"{digest}  {safe_name(name, manifest)}\n" for name, digest in entries).encode()


def write(directory: Path, names: Iterable[str], manifest: Path | None = None) -> Path:
    """Hash ``names`` (relative to ``directory``) and write the manifest atomically."""
    target = manifest or directory / MANIFEST_NAME
    entries = [(n, md5_file(directory / n)) for n in sorted(names)]
    atomic_write_bytes(target, format_lines(entries))
    return target


def safe_name(name: str, manifest: Path | str) -> str:
    """A listed name exactly as a file is called: relative, no ``..``, no ``.`` or empty
    parts (``./a`` and ``a//b`` are not normalised into another name), no surrounding
    whitespace, only printable characters (no NUL, no control or line-separator chars)."""
    p = PurePosixPath(name)
    if (
        not name
        or p.is_absolute()
        or ".." in p.parts
        or str(p) != name
        or name.strip() != name
        or not name.isprintable()
        or "\\" in name
    ):
        raise BadInput(f"manifest names unsafe path {name[:60]!r}", manifest)
    return name


def parse_bytes(data: bytes, manifest: Path | str) -> dict[str, str]:
    """name -> md5 hex from manifest content; BadInput on a malformed line, an unsafe or a
    repeated name. Lines end with LF (CRLF tolerated); no other character splits a line."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise BadInput(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes", manifest)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(f"manifest is not UTF-8 text (byte {err.start})", manifest) from None
    out: dict[str, str] = {}
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip():
            continue
        m = _LINE.fullmatch(line)
        if not m:
            raise BadInput(f"malformed manifest line {lineno}: {line[:60]!r}", manifest)
        name = safe_name(m.group(2), manifest)
        if name in out:
            raise BadInput(f"manifest line {lineno} lists {name[:60]!r} again", manifest)
        out[name] = m.group(1).lower()
    if not out:
        raise BadInput("manifest lists no files", manifest)
    return out


def parse(manifest: Path) -> dict[str, str]:
    """name -> md5 hex of a manifest file (a regular file, read bounded); BadInput if bad."""
    try:
        with open(open_regular(manifest), "rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as err:
        raise BadInput(f"cannot read manifest: {err.strerror or err}", manifest) from None
    return parse_bytes(data, manifest)


def verify(directory: Path, manifest: Path | None = None) -> dict[str, str]:
    """Check every listed file; raise BadInput naming the first bad one. Returns the entries."""
    mpath = manifest or directory / MANIFEST_NAME
    entries = parse(mpath)
    for name, digest in entries.items():
        f = directory / name
        if not os.path.lexists(f):
            raise BadInput(f"listed in {mpath.name} but missing", f)
        actual = md5_file(f)
        if actual != digest:
            raise BadInput(f"checksum mismatch: manifest {digest}, file {actual}", f)
    return entries
