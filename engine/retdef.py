"""RetDef (retrieval definition) XML: one per chunk of a downlink (reference/halfpipe.md 1.7).

``RetDef-<DLID>-<CHUNK>.xml``: root ``retdef`` (type LSEP physics or LSEC calibration),
``arch`` (scid, text = level-0 archive root), ``run`` (runid, l0key, chunkid, gndid, start),
``spans`` with ``span`` elements (apid, tbeg, tend in MET seconds, 6 decimals). The engine
uses the spans to pick the events a chunk's makeEvt builds. Parsed with defusedxml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, SubElement, tostring

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from engine.errors import BadInput
from engine.ids import NS

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
    SubElement(root, "run", runid=str(rd.runid), l0key=str(rd.l0key), chunkid=f"{rd.chunkid:05d}",
               gndid=rd.gndid, start=f"{rd.start:.6f}")
    spans = SubElement(root, "spans")
    for s in rd.spans:
        SubElement(spans, "span", apid=str(s.apid), tbeg=f"{s.tbeg:.6f}", tend=f"{s.tend:.6f}")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root) + b"\n"


def _attr(el: Element, name: str, conv, path: Path):  # type: ignore[no-untyped-def]
    value = el.get(name)
    if value is None:
        raise BadInput(f"malformed RetDef: <{el.tag}> lacks attribute {name!r}", path)
    try:
        return conv(value)
    except ValueError:
        raise BadInput(f"malformed RetDef: <{el.tag} {name}={value!r}> is not valid", path) from None


def parse(path: Path) -> RetDef:
    try:
        root = DET.parse(path).getroot()
    except (DET.ParseError, DefusedXmlException) as err:
        raise BadInput(f"malformed RetDef XML: {err}", path) from None
    except OSError as err:
        raise BadInput(f"cannot read RetDef: {err.strerror}", path) from None
    if root.tag != "retdef":
        raise BadInput(f"malformed RetDef: root element is <{root.tag}>, expected <retdef>", path)
    rtype = root.get("type", "")
    if rtype not in RETDEF_TYPES:
        raise BadInput(f"malformed RetDef: type {rtype!r} is not one of {', '.join(RETDEF_TYPES)}", path)
    arch, run, spans_el = root.find("arch"), root.find("run"), root.find("spans")
    for name, el in (("arch", arch), ("run", run), ("spans", spans_el)):
        if el is None:
            raise BadInput(f"malformed RetDef: missing <{name}>", path)
    assert arch is not None and run is not None and spans_el is not None
    spans = tuple(
        Span(_attr(s, "apid", int, path), _attr(s, "tbeg", float, path), _attr(s, "tend", float, path))
        for s in spans_el.findall("span")
    )
    if not spans:
        raise BadInput("malformed RetDef: <spans> holds no <span>", path)
    for s in spans:
        if not s.tend > s.tbeg:
            raise BadInput(f"malformed RetDef: span apid {s.apid} ends ({s.tend}) before it begins ({s.tbeg})", path)
    return RetDef(
        type=rtype,
        scid=_attr(arch, "scid", int, path),
        arch=(arch.text or "").strip(),
        runid=_attr(run, "runid", int, path),
        l0key=_attr(run, "l0key", int, path),
        chunkid=_attr(run, "chunkid", int, path),
        gndid=run.get("gndid", ""),
        start=_attr(run, "start", float, path),
        spans=spans,
    )
