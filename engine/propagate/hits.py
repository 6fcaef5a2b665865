"""Hit summaries for operators: "not flying blind" in production mode.

``summarize(dir)`` is a pure function returning a ``HitSummary`` dataclass (``to_dict`` for
JSON); ``compare(a, b)`` gives the A/B table with a chi2 per category; ``render_text``
and ``render_comparison`` draw them for a terminal. The console calls the same functions
and renders the dataclasses in Textual.

Production events hold only hits, so the all-photon tables come from the per-flagmask
counts the engine records in meta.json; development events add seqhis histories.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.errors import BadInput
from engine.propagate import flags as F

FACE_NAMES = ("-x", "+x", "-y", "+y", "-z", "+z")
MAP_ROWS, MAP_COLS = 12, 32
HIST_BINS = 12
MIN_CHI2_COUNT = 10  # categories with fewer entries in a+b are shown but not summed


@dataclass
class Histogram:
    edges: list[float]
    counts: list[int]


@dataclass
class FaceMap:
    sensor: int
    name: str
    hits: int
    axes: tuple[str, str]
    extent: tuple[float, float, float, float]  # u min, u max, v min, v max
    counts: list[list[int]]  # MAP_ROWS x MAP_COLS, row 0 = highest v


@dataclass
class Row:
    label: str
    key: str
    count: int
    fraction: float
    hits: int = 0


@dataclass
class HitSummary:
    path: str
    scene: str
    mode: str
    backend: str
    device: str
    photons: int
    hits: int
    hit_fraction: float
    hit_fraction_err: float
    hit_fraction_upper95: float | None  # "rule of three" 95 % upper limit when there are no hits
    hitmask: str
    photons_per_second: float | None
    terminal: dict[str, int]
    flagmasks: list[Row]
    seqhis: list[Row] = field(default_factory=list)
    time: Histogram | None = None
    wavelength: Histogram | None = None
    faces: list[FaceMap] = field(default_factory=list)
    # photons and hits by their generation flag (TO torch, CK Cerenkov, SI scintillation)
    sources: dict[str, tuple[int, int]] = field(default_factory=dict)
    # a GDML detector: hits per sensor id (copynumber), the most hit first; sensors it has
    sensors: list[tuple[int, int]] = field(default_factory=list)
    sensors_hit: int = 0
    sensors_total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def from_steps(self) -> bool:
        """Photons of Cerenkov or scintillation gensteps (not only a torch)."""
        return any(k in self.sources for k in ("CK", "SI"))


@dataclass
class CompareRow:
    label: str
    key: str
    a: int
    b: int
    chi2: float
    counted: bool


@dataclass
class Comparison:
    a: str
    b: str
    photons_a: int
    photons_b: int
    hits_a: int
    hits_b: int
    flagmasks: list[CompareRow]
    flagmask_chi2: float
    flagmask_ndf: int
    seqhis: list[CompareRow] = field(default_factory=list)
    seqhis_chi2: float = 0.0
    seqhis_ndf: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_event(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    """meta.json and ht.npy of an event directory; BadInput naming the file otherwise."""
    meta_p, ht_p = path / "meta.json", path / "ht.npy"
    if not path.is_dir():
        raise BadInput("not an event directory", path)
    try:
        meta = json.loads(meta_p.read_text())
    except FileNotFoundError:
        raise BadInput("no meta.json: not a (complete) propagation event", path) from None
    except (OSError, ValueError) as err:
        raise BadInput(f"unreadable meta.json: {err}", meta_p) from None
    try:
        ht = np.load(ht_p, mmap_mode="r")
    except FileNotFoundError:
        raise BadInput("no ht.npy", path) from None
    except (OSError, ValueError) as err:
        raise BadInput(f"unreadable hits: {err}", ht_p) from None
    if ht.ndim != 3 or ht.shape[1:] != (4, 4) or ht.dtype != np.float32:
        raise BadInput(f"hits must be (H,4,4) float32, got {ht.shape} {ht.dtype}", ht_p)
    check_meta(meta, meta_p)
    return meta, ht


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _vec3_ok(v: Any, positive: bool = False) -> bool:
    return (
        isinstance(v, list)
        and len(v) == 3
        and all(_is_number(e) and abs(e) < 1e12 and (e > 0 or not positive) for e in v)
    )


def check_meta(meta: Any, where: Path) -> None:
    """The fields of meta.json that a summary reads, each of its type (the file is input:
    a hand-edited or foreign meta.json is one line and exit 2, never a traceback)."""

    def bad(what: str) -> BadInput:
        return BadInput(f"meta.json: {what}", where)

    if not isinstance(meta, dict):
        raise bad("must be a JSON object")
    if "photons" in meta and not _is_count(meta["photons"]):
        raise bad("photons must be a non-negative integer")
    for key in ("mode", "backend", "device"):
        if key in meta and not isinstance(meta[key], str):
            raise bad(f"{key} must be text")
    for key, sub in (("hitmask", "label"), ("scene", "name")):
        if key in meta and not (
            isinstance(meta[key], dict) and isinstance(meta[key].get(sub, ""), str)
        ):
            raise bad(f"{key} must be an object with a text {sub}")
    pps = meta.get("photons_per_second")
    if pps is not None and not (_is_number(pps) and pps >= 0):
        raise bad("photons_per_second must be a non-negative number")
    fm = meta.get("flagmask_counts", {})
    if not isinstance(fm, dict) or not all(
        isinstance(k, str) and len(k) <= 18 and _is_count(v) for k, v in fm.items()
    ):
        raise bad("flagmask_counts must map hex flag masks to counts")
    try:
        masks = [int(k, 16) for k in fm]
    except ValueError:
        raise bad("flagmask_counts keys must be hex flag masks") from None
    if any(not 0 <= m < 2**32 for m in masks):
        raise bad("flagmask_counts keys must be 32-bit flag masks")
    tc = meta.get("terminal_counts", {})
    if not isinstance(tc, dict) or not all(
        isinstance(k, str) and _is_count(v) for k, v in tc.items()
    ):
        raise bad("terminal_counts must map names to counts")
    geo = meta.get("geometry", {})
    if not isinstance(geo, dict):
        raise bad("geometry must be an object")
    if "container_half" in geo and not _vec3_ok(geo["container_half"], positive=True):
        raise bad("geometry.container_half must be [x, y, z]")
    objs = geo.get("objects", [])
    if not isinstance(objs, list) or not all(
        isinstance(o, dict)
        and o.get("shape") in ("box", "sphere")
        and _vec3_ok(o.get("center"))
        and _vec3_ok(o.get("half_size"), positive=True)
        for o in objs
    ):
        raise bad("geometry.objects must be [{shape, center, half_size}, ...]")


def _hist(values: np.ndarray) -> Histogram | None:
    values = values[np.isfinite(values)].astype(np.float64)  # ht.npy is input too: no NaN/inf
    if values.size == 0:
        return None
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-3 * max(1.0, abs(lo)):  # a line (monochromatic source): centre it
        pad = max(0.5, 1e-3 * abs(lo))
        lo, hi = lo - pad, hi + pad
    counts, edges = np.histogram(values, bins=HIST_BINS, range=(lo, hi))
    return Histogram([float(e) for e in edges], [int(c) for c in counts])


def _face_name(
    sensor: int, geometry: dict[str, Any]
) -> tuple[str, tuple[str, str], tuple[float, ...], int, int, str]:
    vol, face = (sensor - 1) // 8, (sensor - 1) % 8
    objs = geometry.get("objects", [])
    if vol == 0:
        half = geometry.get("container_half", [1.0, 1.0, 1.0])
        center, shape, owner = [0.0, 0.0, 0.0], "box", "container"
    elif vol - 1 < len(objs):
        o = objs[vol - 1]
        half, center, shape, owner = o["half_size"], o["center"], o["shape"], f"objects[{vol - 1}]"
    else:
        return f"sensor {sensor}", ("u", "v"), (0.0, 1.0, 0.0, 1.0), 0, 1, "unknown"
    if shape == "sphere":
        return (
            f"{owner} sphere",
            ("phi", "cos theta"),
            (-math.pi, math.pi, -1.0, 1.0),
            0,
            1,
            "sphere",
        )
    axis = face // 2
    ua, va = [a for a in range(3) if a != axis]
    xyz = "xyz"
    ext = (
        center[ua] - half[ua],
        center[ua] + half[ua],
        center[va] - half[va],
        center[va] + half[va],
    )
    return f"{owner} {FACE_NAMES[face]}", (xyz[ua], xyz[va]), ext, ua, va, "box"


def _sky(ht: np.ndarray) -> FaceMap:
    """Hit positions seen from the world's origin: azimuth across, cos(polar angle) down
    (a sphere of PMTs unrolled)."""
    p = ht[:, 0, :3].astype(np.float64)
    p = p[np.all(np.isfinite(p), axis=1)]
    r = np.linalg.norm(p, axis=1)
    u = np.arctan2(p[:, 1], p[:, 0])
    v = p[:, 2] / np.where(r > 0, r, 1)
    h, _, _ = np.histogram2d(v, u, bins=(MAP_ROWS, MAP_COLS), range=((-1, 1), (-math.pi, math.pi)))
    return FaceMap(
        0,
        "all sensors, seen from the origin",
        int(len(p)),
        ("phi", "cos theta"),
        (-math.pi, math.pi, -1.0, 1.0),
        [[int(c) for c in row] for row in h[::-1]],
    )


def _sensors(ht: np.ndarray, top: int) -> tuple[list[tuple[int, int]], int]:
    ids = ht.view(np.int32)[:, 3, 1]
    vals, cnts = np.unique(ids, return_counts=True)
    order = np.lexsort((vals, -cnts))[:top]
    return [(int(vals[i]), int(cnts[i])) for i in order], int(len(vals))


def _faces(ht: np.ndarray, meta: dict[str, Any]) -> list[FaceMap]:
    geometry = meta.get("geometry", {})
    if isinstance(geometry, dict) and "gdml" in geometry:
        return [_sky(ht)] if len(ht) else []
    sensors = ht.view(np.uint32)[:, 3, 1]
    out = []
    for s in np.unique(sensors):
        s = int(s)
        if s == 0:
            continue
        sel = ht[(sensors == s) & np.all(np.isfinite(ht[:, 0, :3]), axis=1)]
        name, axes, ext, ua, va, kind = _face_name(s, geometry)
        if kind == "sphere":
            o = geometry["objects"][(s - 1) // 8 - 1]
            rel = sel[:, 0, :3] - np.asarray(o["center"], np.float32)
            r = np.linalg.norm(rel, axis=1)
            u = np.arctan2(rel[:, 1], rel[:, 0])
            v = rel[:, 2] / np.where(r > 0, r, 1)
        elif kind == "box":
            u, v = sel[:, 0, ua], sel[:, 0, va]
        else:
            u = v = np.zeros(len(sel))
        h, _, _ = np.histogram2d(
            v, u, bins=(MAP_ROWS, MAP_COLS), range=((ext[2], ext[3]), (ext[0], ext[1]))
        )
        out.append(
            FaceMap(
                s,
                name,
                int(len(sel)),
                axes,
                tuple(float(e) for e in ext),  # type: ignore[arg-type]
                [[int(c) for c in row] for row in h[::-1]],
            )
        )
    return out


def summarize(path: str | Path, top: int = 20) -> HitSummary:
    """Summary of one event directory (pure: reads files, returns data, prints nothing)."""
    path = Path(path)
    meta, ht = load_event(path)
    n = int(meta.get("photons", 0))
    h = int(ht.shape[0])
    f = h / n if n else 0.0
    err = math.sqrt(f * (1 - f) / n) if n else 0.0
    fm_hits: dict[int, int] = {}
    if h:
        vals, cnts = np.unique(ht.view(np.uint32)[:, 3, 3], return_counts=True)
        fm_hits = {int(v): int(c) for v, c in zip(vals, cnts, strict=True)}
    fm_all = {int(k, 16): int(v) for k, v in meta.get("flagmask_counts", {}).items()}
    rows = [
        Row(F.mask_label(k), f"0x{k:x}", c, c / n if n else 0.0, fm_hits.get(k, 0))
        for k, c in sorted(fm_all.items(), key=lambda kv: -kv[1])
    ]
    seq_rows: list[Row] = []
    seq_p = path / "seq.npy"
    if seq_p.exists():
        seq = np.load(seq_p, mmap_mode="r")
        vals, cnts = np.unique(np.asarray(seq), return_counts=True)
        order = np.argsort(-cnts, kind="stable")[:top]
        seq_rows = [
            Row(
                F.seqhis_label(int(vals[i])),
                f"{int(vals[i]):x}",
                int(cnts[i]),
                int(cnts[i]) / n if n else 0.0,
            )
            for i in order
        ]
    hm = meta.get("hitmask", {})
    sources: dict[str, tuple[int, int]] = {}
    for name in ("TO", "CK", "SI"):
        bit = 1 << F.FLAG_BITS[name]
        ph = sum(c for k, c in fm_all.items() if k & bit)
        if ph:
            sources[name] = (ph, sum(c for k, c in fm_hits.items() if k & bit))
    return HitSummary(
        path=str(path),
        scene=meta.get("scene", {}).get("name", "?"),
        mode=meta.get("mode", "?"),
        backend=meta.get("backend", "?"),
        device=meta.get("device", "?"),
        photons=n,
        hits=h,
        hit_fraction=f,
        hit_fraction_err=err,
        hit_fraction_upper95=(3.0 / n if n else None) if h == 0 else None,
        hitmask=hm.get("label", "SD"),
        photons_per_second=meta.get("photons_per_second"),
        terminal=meta.get("terminal_counts", {}),
        flagmasks=rows[:top],
        seqhis=seq_rows,
        time=_hist(np.asarray(ht[:, 0, 3])),
        wavelength=_hist(np.asarray(ht[:, 2, 3])),
        faces=_faces(np.asarray(ht), meta),
        sources=sources,
        **_sensor_fields(np.asarray(ht), meta, top),
    )


def _sensor_fields(ht: np.ndarray, meta: dict[str, Any], top: int) -> dict[str, Any]:
    geometry = meta.get("geometry", {})
    if not (isinstance(geometry, dict) and isinstance(geometry.get("gdml"), dict)):
        return {}
    total = geometry["gdml"].get("sensors")
    rows, hit = _sensors(ht, top) if len(ht) else ([], 0)
    return {
        "sensors": rows,
        "sensors_hit": hit,
        "sensors_total": total if _is_count(total) else None,
    }


def _chi2_rows(
    a: dict[str, tuple[str, int]], b: dict[str, tuple[str, int]], na: int, nb: int
) -> tuple[list[CompareRow], float, int]:
    """Two-sample chi2 per category, scaled for unequal photon counts:
    (a*sqrt(nb/na) - b*sqrt(na/nb))^2 / (a + b); equals Opticks' (a-b)^2/(a+b) when na = nb."""
    ka = math.sqrt(nb / na) if na and nb else 1.0
    rows, total, ndf = [], 0.0, 0
    for key in sorted(
        set(a) | set(b), key=lambda k: -(a.get(k, ("", 0))[1] + b.get(k, ("", 0))[1])
    ):
        label = (a.get(key) or b.get(key))[0]  # type: ignore[index]
        ca, cb = a.get(key, ("", 0))[1], b.get(key, ("", 0))[1]
        c2 = (ca * ka - cb / ka) ** 2 / (ca + cb) if ca + cb else 0.0
        counted = ca + cb >= MIN_CHI2_COUNT
        if counted:
            total += c2
            ndf += 1
        rows.append(CompareRow(label, key, ca, cb, c2, counted))
    return rows, total, max(ndf - 1, 0)  # totals are fixed by the photon counts


def compare(path_a: str | Path, path_b: str | Path) -> Comparison:
    """A/B comparison of two events: flagmask (and seqhis) categories with chi2."""
    sa, sb = summarize(path_a, top=10**6), summarize(path_b, top=10**6)
    fa = {r.key: (r.label, r.count) for r in sa.flagmasks}
    fb = {r.key: (r.label, r.count) for r in sb.flagmasks}
    rows, c2, ndf = _chi2_rows(fa, fb, sa.photons, sb.photons)
    cmp_ = Comparison(
        str(path_a), str(path_b), sa.photons, sb.photons, sa.hits, sb.hits, rows, c2, ndf
    )
    if sa.seqhis and sb.seqhis:
        qa = {r.key: (r.label, r.count) for r in sa.seqhis}
        qb = {r.key: (r.label, r.count) for r in sb.seqhis}
        cmp_.seqhis, cmp_.seqhis_chi2, cmp_.seqhis_ndf = _chi2_rows(qa, qb, sa.photons, sb.photons)
    return cmp_


# ----------------------------------------------------------------------------- rendering

_BAR = "█"
_SHADES = " .:-=+*#%@"


def _render_hist(title: str, unit: str, h: Histogram | None, width: int = 40) -> list[str]:
    if h is None:
        return [f"{title}: no hits"]
    out = [f"{title} ({unit})"]
    peak = max(h.counts) or 1
    for i, c in enumerate(h.counts):
        bar = _BAR * round(width * c / peak)
        out.append(f"  {h.edges[i]:10.3f} .. {h.edges[i + 1]:10.3f} |{bar:<{width}}| {c}")
    return out


def _render_map(fm: FaceMap) -> list[str]:
    peak = max(max(r) for r in fm.counts) or 1
    u0, u1, v0, v1 = fm.extent
    out = [
        f"hit map {fm.name} (sensor {fm.sensor}): {fm.hits} hits, "
        f"{fm.axes[0]} {u0:g}..{u1:g} across, {fm.axes[1]} {v1:g}..{v0:g} down"
    ]
    out.append("  +" + "-" * MAP_COLS + "+")
    for row in fm.counts:
        line = "".join(
            _SHADES[0 if c == 0 else 1 + min(len(_SHADES) - 2, (len(_SHADES) - 2) * c // peak)]
            for c in row
        )
        out.append("  |" + line + "|")
    out.append("  +" + "-" * MAP_COLS + "+")
    return out


def render_text(s: HitSummary) -> str:
    """Plain-text rendering (also valid Rich markup-free text) of a HitSummary."""
    frac = (
        f"< {s.hit_fraction_upper95:.3g} (95 % CL)"
        if s.hit_fraction_upper95 is not None
        else f"{s.hit_fraction:.6f} +- {s.hit_fraction_err:.6f}"
    )
    lines = [
        f"event {s.path}  scene {s.scene}  mode {s.mode}  backend {s.backend} ({s.device})",
        f"photons {s.photons:,}  hits {s.hits:,}  hit fraction {frac}  (hit mask {s.hitmask})",
    ]
    if s.photons_per_second:
        lines.append(f"throughput {s.photons_per_second:,.0f} photons/s")
    if s.from_steps:
        lines.append(
            "sources  "
            + "  ".join(f"{k} {p:,} photons {h:,} hits" for k, (p, h) in s.sources.items())
        )
    if s.terminal:
        lines.append("terminal  " + "  ".join(f"{k} {v:,}" for k, v in s.terminal.items()))
    lines.append("")
    lines.append(f"{'flagmask':<28} {'photons':>12} {'fraction':>9} {'hits':>10}")
    for r in s.flagmasks:
        lines.append(f"{r.label:<28} {r.count:>12,} {r.fraction:>9.5f} {r.hits:>10,}")
    if s.seqhis:
        lines.append("")
        lines.append(f"{'seqhis':<14} {'history':<36} {'photons':>12} {'fraction':>9}")
        for r in s.seqhis:
            lines.append(f"{r.key:<14} {r.label:<36} {r.count:>12,} {r.fraction:>9.5f}")
    if s.sensors:
        lines.append("")
        of = f" of {s.sensors_total:,}" if s.sensors_total is not None else ""
        lines.append(f"sensors hit {s.sensors_hit:,}{of}; the most hit (sensor id = copynumber):")
        for k in range(0, len(s.sensors), 5):
            lines.append("  " + "  ".join(f"{sid:>8} {h:>7,}" for sid, h in s.sensors[k : k + 5]))
    lines.append("")
    lines += _render_hist("hit time", "ns", s.time)
    lines += _render_hist("hit wavelength", "nm", s.wavelength)
    for fm in s.faces:
        lines.append("")
        lines += _render_map(fm)
    return "\n".join(lines)


def render_comparison(c: Comparison) -> str:
    lines = [
        f"A {c.a}: photons {c.photons_a:,} hits {c.hits_a:,}",
        f"B {c.b}: photons {c.photons_b:,} hits {c.hits_b:,}",
        "",
    ]

    def table(title: str, rows: list[CompareRow], chi2: float, ndf: int) -> None:
        lines.append(f"{title:<36} {'A':>10} {'B':>10} {'chi2':>8}")
        for r in rows:
            mark = "" if r.counted else "  (not counted: a+b < 10)"
            lines.append(f"{r.label:<36} {r.a:>10,} {r.b:>10,} {r.chi2:>8.2f}{mark}")
        lines.append(f"{'chi2/ndf':<36} {'':>10} {'':>10} {chi2:>8.2f}/{ndf}")
        lines.append("")

    table("flagmask", c.flagmasks, c.flagmask_chi2, c.flagmask_ndf)
    if c.seqhis:
        table("seqhis", c.seqhis, c.seqhis_chi2, c.seqhis_ndf)
    return "\n".join(lines).rstrip()
