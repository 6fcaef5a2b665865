"""Identifiers of HalfPipe and Pipeline-II (docs/halfpipe.md, "Identifiers").

- Downlink id ``YYMMDDnnn`` (9 digits, ``%09d``): UTC delivery date + sequence in the day.
- Run id: acquisition start in MET seconds (Fermi epoch 2001-01-01T00:00:00Z), shown as
  ``r%010d`` and, for lock names, as 8-digit lowercase hex.
- Chunk id: 1..numChunks, ``%05d``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from engine.core.errors import BadInput

MET_EPOCH = datetime(2001, 1, 1, tzinfo=UTC)
NS = 1_000_000_000
# Latest plausible MET second: times are 32-bit seconds on board (year 2137), so a time at or
# beyond it (1e30, inf) is bad input, and every MET time in ns fits an int64.
MET_MAX_S = 2**32
_DLID_RE = re.compile(r"[0-9]{9}")


def parse_dlid(text: str | int) -> str:
    """Return the canonical 9-digit form; reject anything that is not a valid YYMMDDnnn.

    A name is validated exactly as it arrived, never stripped or normalised: a directory
    ``"261202013 "`` is not downlink 261202013 (it would shadow the genuine one), and
    neither are other Unicode digits or a trailing newline.
    """
    s = f"{text:09d}" if isinstance(text, int) and not isinstance(text, bool) else str(text)
    if not _DLID_RE.fullmatch(s):
        raise BadInput(f"invalid downlink id {str(text)[:40]!r}: expected 9 digits YYMMDDnnn")
    try:
        dlid_date(s)
    except ValueError:
        raise BadInput(f"invalid downlink id {s!r}: {s[:6]} is not a date YYMMDD") from None
    if s[6:] == "000":
        raise BadInput(f"invalid downlink id {s!r}: sequence nnn starts at 001")
    return s


def is_dlid(text: str) -> bool:
    try:
        parse_dlid(text)
    except BadInput:
        return False
    return True


def dlid_date(dlid: str) -> date:
    return datetime.strptime(dlid[:6], "%y%m%d").replace(tzinfo=UTC).date()


def met_of(dt: datetime) -> float:
    return (dt - MET_EPOCH).total_seconds()


def datetime_of_met(met_seconds: float) -> datetime:
    return datetime.fromtimestamp(MET_EPOCH.timestamp() + met_seconds, tz=UTC)


def dlid_start_met(dlid: str) -> int:
    """MET second at which the mock places a downlink's data: its date + (nnn-1) x 30 min."""
    d = dlid_date(dlid)
    midnight = datetime(d.year, d.month, d.day, tzinfo=UTC)
    return int(met_of(midnight)) + (int(dlid[6:]) - 1) * 1800


def run_name(run: int) -> str:
    return f"r{int(run):010d}"


def run_hex(run: int) -> str:
    return f"{int(run):08x}"


def chunk_name(chunk: int) -> str:
    return f"{int(chunk):05d}"


def retdef_name(dlid: str, chunk: int) -> str:
    return f"RetDef-{dlid}-{chunk_name(chunk)}.xml"


def staged_name(run: int, first_event: int) -> str:
    """HalfPipe's merged-file name ``r%010d-e%020d`` (L1Proc ``finders.chunkRe``)."""
    return f"r{int(run):010d}-e{int(first_event):020d}"
