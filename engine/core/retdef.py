"""RetDef (retrieval definition) XML: one per chunk of a downlink
(docs/halfpipe.md, "RetDef").

``RetDef-<DLID>-<CHUNK>.xml``: root ``retdef`` (type LSEP physics or LSEC calibration),
``arch`` (scid, text = level-0 archive root), ``run`` (runid, l0key, chunkid, gndid, start),
``spans`` with ``span`` elements (apid, tbeg, tend in MET seconds, 6 decimals). The engine
uses the spans to pick the events a chunk's makeEvt builds. Parsed with defusedxml.

Every value is checked where the file enters (intake), not where it is used: integers are
plain decimals in their ranges, times plain decimals within the MET range [0, 2^32) s, so
``inf``, ``1e30`` or ``-1e12`` are rejected with the attribute named instead of reaching
makeEvt as an OverflowError.

Why in core: intake checks every RetDef of a delivery, the event builder reads one to pick
a chunk's events (``--retdef``) and the mock writes them, so the format has one home below
all three instead of the builder importing intake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, SubElement, tostring

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from engine.core.errors import BadInput
from engine.core.ids import MET_MAX_S, NS
from engine.core.inputs import open_regular

RETDEF_TYPES = ("LSEP", "LSEC")


@dataclass(frozen=True)
class Span:
    apid: int
    tbeg: float
    tend: float


@dataclass(frozen=True)
class RetDef:
    type: str
    scid: int
    arch: str
    runid: int
    l0key: int
    chunkid: int
    gndid: str
    start: float
    spans: tuple[Span, ...]

    @property
    def tbeg(self) -> float:
        return min(s.tbeg for s in self.spans)

    @property
    def tend(self) -> float:
        return max(s.tend for s in self.spans)

    def window_ns(self) -> tuple[int, int]:
        """[begin, end) of the chunk in ns since the MET epoch (end exclusive)."""
        return round(self.tbeg * NS), round(self.tend * NS)


def to_xml(rd: RetDef) -> bytes:
    root = Element("retdef", type=rd.type)
    arch = SubElement(root, "arch", scid=str(rd.scid))
    arch.text = rd.arch
    SubElement(
        root,
        "run",
        runid=str(rd.runid),
        l0key=str(rd.l0key),
        chunkid=f"{rd.chunkid:05d}",
        gndid=rd.gndid,
        start=f"{rd.start:.6f}",
    )
    spans = SubElement(root, "spans")
    for s in rd.spans:
        SubElement(spans, "span", apid=str(s.apid), tbeg=f"{s.tbeg:.6f}", tend=f"{s.tend:.6f}")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root) + b"\n"


_INT = re.compile(r"[0-9]{1,10}")
_DECIMAL = re.compile(r"[0-9]{1,12}(\.[0-9]{1,12})?")
MAX_RETDEF_BYTES = 1 << 20  # a RetDef is a few hundred bytes; it is read whole, so it is bounded
# (lo, hi inclusive) of each integer attribute: CCSDS APIDs are 11 bits, chunks %05d from 1,
# the others are 32-bit quantities (runid is a MET second).
_INT_RANGE = {
    "apid": (0, 2047),
    "chunkid": (1, 99_999),
    "scid": (0, 2**32 - 1),
    "runid": (0, MET_MAX_S - 1),
    "l0key": (0, 2**32 - 1),
}


def _attr_text(el: Element, name: str, path: Path) -> str:
    value = el.get(name)
    if value is None:
        raise BadInput(f"malformed RetDef: <{el.tag}> lacks attribute {name!r}", path)
    return value


def _int_attr(el: Element, name: str, path: Path) -> int:
    """A decimal integer written exactly (no sign, spaces, ``_`` or other digits), in range."""
    value = _attr_text(el, name, path)
    lo, hi = _INT_RANGE[name]
    if not _INT.fullmatch(value) or not lo <= int(value) <= hi:
        raise BadInput(
            f"malformed RetDef: <{el.tag} {name}={value[:40]!r}> is not an integer in {lo} .. {hi}",
            path,
        )
    return int(value)


def _met_attr(el: Element, name: str, path: Path) -> float:
    """A MET time in seconds: plain decimal (no sign, exponent, inf or nan), 0 <= t < 2^32."""
    value = _attr_text(el, name, path)
    if not _DECIMAL.fullmatch(value) or not 0 <= float(value) < MET_MAX_S:
        raise BadInput(
            f"malformed RetDef: <{el.tag} {name}={value[:40]!r}> is not a MET time "
            f"in seconds, 0 <= t < {MET_MAX_S}",
            path,
        )
    return float(value)


def _read(path: Path) -> bytes:
    try:
        with open(open_regular(path), "rb") as fh:
            data = fh.read(MAX_RETDEF_BYTES + 1)
    except OSError as err:
        raise BadInput(f"cannot read RetDef: {err.strerror or err}", path) from None
    if len(data) > MAX_RETDEF_BYTES:
        raise BadInput(f"RetDef is larger than {MAX_RETDEF_BYTES} bytes", path)
    return data


def parse(path: Path) -> RetDef:
    """Read and validate a RetDef file; every value is checked against its range here, at
    intake, so makeEvt never meets an ``inf`` or a time beyond the MET range."""
    data = _read(path)
    try:
        root = DET.fromstring(data)
    except (DET.ParseError, DefusedXmlException) as err:
        raise BadInput(f"malformed RetDef XML: {' '.join(str(err).split())}", path) from None
    if root.tag != "retdef":
        raise BadInput(
            f"malformed RetDef: root element is {root.tag[:40]!r}, expected <retdef>", path
        )
    rtype = root.get("type", "")
    if rtype not in RETDEF_TYPES:
        raise BadInput(
            f"malformed RetDef: type {rtype[:40]!r} is not one of {', '.join(RETDEF_TYPES)}", path
        )
    arch, run, spans_el = root.find("arch"), root.find("run"), root.find("spans")
    for name, el in (("arch", arch), ("run", run), ("spans", spans_el)):
        if el is None:
            raise BadInput(f"malformed RetDef: missing <{name}>", path)
    assert arch is not None and run is not None and spans_el is not None
    spans = tuple(
        Span(_int_attr(s, "apid", path), _met_attr(s, "tbeg", path), _met_attr(s, "tend", path))
        for s in spans_el.findall("span")
    )
    if not spans:
        raise BadInput("malformed RetDef: <spans> holds no <span>", path)
    for s in spans:
        if not s.tend > s.tbeg:
            raise BadInput(
                f"malformed RetDef: span apid {s.apid} ends ({s.tend}) before it begins ({s.tbeg})",
                path,
            )
    return RetDef(
        type=rtype,
        scid=_int_attr(arch, "scid", path),
        arch=(arch.text or "").strip(),
        runid=_int_attr(run, "runid", path),
        l0key=_int_attr(run, "l0key", path),
        chunkid=_int_attr(run, "chunkid", path),
        gndid=run.get("gndid", ""),
        start=_met_attr(run, "start", path),
        spans=spans,
    )
