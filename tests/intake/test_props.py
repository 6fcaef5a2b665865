"""Property tests of the intake boundary parsers (tests/props.py ``total``): manifest lines,
RetDef XML and attributes, delivery names and the mapping of a name to a candidate. Any
input gives a value or one-line BadInput; what is accepted is exactly what was given."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.core import retdef
from engine.core.errors import BadInput
from engine.core.ids import MET_MAX_S, NS, is_dlid, parse_dlid
from engine.core.retdef import RetDef, Span, to_xml
from engine.core.workspace import Workspace, init_workspace
from engine.intake import inbox, manifest
from tests.props import total

# ------------------------------------------------------------------ strategies

HEX = st.text("0123456789abcdefABCDEF", min_size=30, max_size=34)
NAME = st.text(min_size=0, max_size=40)  # any unicode: controls, separators, surrogates
NAME_CHARS = st.characters(blacklist_categories=("Cs",))
NUMBERISH = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(
        [
            "inf",
            "-inf",
            "nan",
            "1e30",
            "-1e12",
            " 5",
            "5 ",
            "1_000",
            "٣",
            "0x10",
            "",
            "4294967296",
            "4294967295.999999",
            "0.0",
            "00001",
            "1.5e3",
        ]
    ),
    st.text(max_size=12),
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("props")


@pytest.fixture(scope="module")
def pws(tmp_path_factory) -> Workspace:
    return init_workspace(tmp_path_factory.mktemp("pws") / "ws")


# ------------------------------------------------------------------ manifest lines


@given(st.binary(max_size=400))
def test_manifest_parse_bytes_is_total(data):
    total(manifest.parse_bytes, data, "MANIFEST.md5")


@given(
    st.lists(st.tuples(HEX, st.sampled_from(["  ", " *", " ", "\t", "   "]), NAME), max_size=6),
    st.sampled_from(["\n", "\r\n", "\x85", "\u2028", "\x0b"]),
)
def test_manifest_lines_are_total_and_exact(lines, eol):
    data = eol.join(h + sep + n for h, sep, n in lines).encode("utf-8", "surrogatepass")
    out = total(manifest.parse_bytes, data, "MANIFEST.md5")
    if isinstance(out, BadInput):
        return
    for name, digest in out.items():  # accepted names are exactly as listed, never stripped
        assert re.fullmatch(r"[0-9a-f]{32}", digest)
        assert name == name.strip() and name.isprintable() and not name.startswith("/")
        assert ".." not in name.split("/") and "" not in name.split("/")
        assert any(n == name for _, _, n in lines)


@given(
    st.dictionaries(
        st.text(NAME_CHARS, min_size=1, max_size=20),
        HEX.filter(lambda h: len(h) == 32),
        min_size=1,
        max_size=5,
    )
)
def test_manifest_round_trip(entries):
    """What the writer accepts reads back as exactly the same names; what it refuses (a line
    break in a name, which would read back as another name) the reader refuses too."""
    data = total(manifest.format_lines, sorted(entries.items()))
    if isinstance(data, BadInput):
        for name in entries:
            if isinstance(total(manifest.safe_name, name, "MANIFEST.md5"), BadInput):
                break
        else:
            raise AssertionError(f"writer refused plain names {sorted(entries)}")
        return
    out = total(manifest.parse_bytes, data, "MANIFEST.md5")
    assert out == {k: v.lower() for k, v in entries.items()}


def test_manifest_writer_refuses_a_name_that_reads_back_as_another():
    """Found by the round trip: ``0\\n`` was written as a line that reads back as ``0``."""
    with pytest.raises(BadInput, match="unsafe path"):
        manifest.format_lines([("0\n", "0" * 32)])


@given(st.binary(max_size=200))
def test_manifest_parse_file_is_total(scratch, data):
    f = scratch / "MANIFEST.md5"
    f.write_bytes(data)
    total(manifest.parse, f)


# ------------------------------------------------------------------ RetDef XML and attributes


def _retdef_xml(attrs: dict[str, str], rtype: str) -> bytes:
    def a(*names: str) -> str:
        return " ".join(f'{n}="{_esc(attrs[n])}"' for n in names if n in attrs)

    return (
        f'<?xml version="1.0"?><retdef type="{_esc(rtype)}"><arch {a("scid")}>level0</arch>'
        f'<run {a("runid", "l0key", "chunkid", "start")} gndid="x"/>'
        f'<spans><span {a("apid", "tbeg", "tend")}/></spans></retdef>'
    ).encode("utf-8", "replace")


def _esc(v: str) -> str:
    return v.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


ATTRS = st.fixed_dictionaries(
    {},
    optional={
        n: NUMBERISH for n in ("scid", "runid", "l0key", "chunkid", "start", "apid", "tbeg", "tend")
    },
)


@given(ATTRS, st.sampled_from(["LSEP", "LSEC", "lsep", "LSEP ", ""]))
def test_retdef_attributes_are_total_and_in_range(scratch, attrs, rtype):
    f = scratch / "RetDef-251125001-00001.xml"
    f.write_bytes(_retdef_xml(attrs, rtype))
    rd = total(retdef.parse, f)
    if isinstance(rd, BadInput):
        return
    for t in (rd.start, rd.tbeg, rd.tend):
        assert math.isfinite(t) and 0 <= t < MET_MAX_S
    assert rd.tbeg < rd.tend and 1 <= rd.chunkid <= 99_999
    lo, hi = rd.window_ns()
    assert 0 <= lo < hi <= MET_MAX_S * NS < 2**63  # makeEvt's int64 window cannot overflow


@given(st.binary(max_size=300))
def test_retdef_bytes_are_total(scratch, data):
    f = scratch / "RetDef-251125001-00002.xml"
    f.write_bytes(data)
    total(retdef.parse, f)


@given(
    st.floats(0, MET_MAX_S - 2, allow_nan=False),
    st.floats(0.001, 1e6, allow_nan=False),
    st.integers(0, 2047),
    st.integers(1, 99_999),
)
def test_retdef_written_by_us_is_read_back(scratch, tbeg, width, apid, chunk):
    tbeg = round(tbeg, 6)
    tend = round(tbeg + width, 6)
    assume(tbeg < tend < MET_MAX_S)
    rd = RetDef("LSEP", 77, "level0", int(tbeg), 1, chunk, "ab", tbeg, (Span(apid, tbeg, tend),))
    f = scratch / "RetDef-251125001-00003.xml"
    f.write_bytes(to_xml(rd))
    back = retdef.parse(f)
    assert back.spans[0].apid == apid and back.chunkid == chunk
    assert abs(back.tbeg - tbeg) < 1e-6 and abs(back.tend - tend) < 1e-6


# ------------------------------------------------------------------ delivery names


@given(
    st.one_of(
        st.text(max_size=14),
        st.integers(-(10**10), 10**10),
        st.from_regex(r"[0-9]{6}[0-9]{3}\s?", fullmatch=True),
    )
)
def test_parse_dlid_is_total_and_exact(text):
    out = total(parse_dlid, text)
    if isinstance(out, BadInput):
        assert not is_dlid(str(text)) or isinstance(text, int)
        return
    assert re.fullmatch(r"[0-9]{9}", out) and out[6:] != "000"
    if isinstance(text, str):
        assert out == text  # never stripped or normalised


def _fs_name(name: str) -> bool:
    return (
        bool(name)
        and "/" not in name
        and "\x00" not in name
        and name not in (".", "..")
        and len(os.fsencode(name)) < 200
    )


@given(st.text(NAME_CHARS, min_size=1, max_size=24), st.sampled_from(["level0", "fcopy"]))
def test_name_maps_to_candidate_exactly(pws, name, kind):
    """A name present in an inbox maps to a candidate whose stem is exactly that name (or
    none: hidden/temporary names); its downlink id is that name or nothing."""
    assume(_fs_name(name) and _fs_name(name + ".md5"))
    if kind == "level0":
        d = pws.incoming_level0 / name
        d.mkdir(parents=True, exist_ok=True)
        target = d / manifest.MANIFEST_NAME
    else:
        pws.incoming_fcopy.mkdir(parents=True, exist_ok=True)
        target = pws.incoming_fcopy / f"{name}.md5"
    target.write_bytes(b"")
    try:
        cand = total(inbox.candidate_for, pws, target)
        assert not isinstance(cand, BadInput)
        # what is judged is the entry's own name: a directory, or the package's .md5 file
        # ("0~.md5" is no editor backup; it is a delivery with a bad id, rejected with it)
        if inbox.ignored(name if kind == "level0" else f"{name}.md5"):
            assert cand is None
            return
        assert cand is not None and cand.stem == name and cand.kind == kind
        assert cand.name == f"{kind}:{name}"
        assert is_dlid(cand.stem) == bool(re.fullmatch(r"[0-9]{9}", name) and is_dlid(name))
        assert [c.name for c in inbox.scan(pws)] == [cand.name]
    finally:
        target.unlink()
        if kind == "level0":
            target.parent.rmdir()


@given(st.lists(st.text(max_size=12), min_size=1, max_size=4))
def test_candidate_for_any_path_is_total(pws, parts):
    for base in (pws.incoming_level0, pws.incoming_fcopy, pws.root):
        total(inbox.candidate_for, pws, base.joinpath(*[p or "x" for p in parts]))
