"""Mock deliveries: the seed's file-creation script, made useful
(docs/eventbuilder.md, "The primitive offline event builder").

For a downlink id it writes one HDF5 file per data source with ``/timestamp`` (uint64 ns
since the MET epoch, 120 Hz with jitter, strictly increasing) and ``/data`` (int32 rows
derived from the timestamp, chunked along events); the principal source adds
``/smalldata/color`` (red/blue/green) and ``/smalldata/run``; secondary sources drop a random
share of events. One ``RetDef-<DLID>-<CHUNK>.xml`` per chunk describes its time span.
The result is delivered as a level-0 directory with ``MANIFEST.md5`` written last, or as an
fcopy package (``<DLID>.tar`` then ``<DLID>.md5``). Deterministic for a seed; payload is
written in blocks, so memory stays bounded whatever the file size.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from engine.builder.payload import PAYLOAD_SCHEME, rows_for
from engine.core.atomic import atomic_path, atomic_write_bytes, remove_path
from engine.core.diskspace import check_space
from engine.core.errors import BadInput
from engine.core.ids import NS, dlid_start_met, parse_dlid, retdef_name
from engine.core.retdef import RetDef, Span, to_xml
from engine.intake import manifest
from engine.mock.limits import GENSTEP_KINDS, MAX_EVENT_BYTES, MAX_EVENTS

DETECTORS = ("cspad", "epix", "jungfrau", "opal", "andor", "pnccd", "zyla", "alvium")
COLORS = np.array([b"red", b"blue", b"green"], dtype="S5")
EVENT_PERIOD_NS = NS // 120  # LCLS beam rate
LPA_APIDS = (956, 957)
BLOCK_BYTES = 32 << 20  # payload written per h5py call


@dataclass(frozen=True)
class MockSpec:
    dlid: str
    sources: int = 3
    events: int = 1000
    event_bytes: int = 1_000_000
    runs: int = 2
    chunks: int = 2
    seed: int = 0
    scene: str | None = (
        None  # name of a packaged scene (assets/scenes): adds gensteps.npy + scene.txt
    )
    gensteps_photons: int = 0  # photons the delivery's gensteps carry (0: the scene's, one track)
    gensteps_kind: str = (
        "torch"  # torch (the scene's source), cerenkov (muons), scintillation (electrons)
    )
    gensteps_file: str | None = None  # a genstep file to carry instead (with its material map)

    def validate(self) -> None:
        parse_dlid(self.dlid)
        for name in ("sources", "events", "runs", "chunks"):
            if getattr(self, name) < 1:
                raise BadInput(f"--{name} must be at least 1")
        if self.events > MAX_EVENTS:
            raise BadInput(f"--events must be at most {MAX_EVENTS}")
        if self.event_bytes > MAX_EVENT_BYTES:
            raise BadInput(f"--event-bytes must be at most {MAX_EVENT_BYTES}")
        if self.event_bytes < 4:
            raise BadInput("--event-bytes must be at least 4 (one int32)")
        if self.runs > self.events or self.chunks > self.events:
            raise BadInput("--runs and --chunks cannot exceed --events")
        if self.gensteps_kind not in GENSTEP_KINDS:
            raise BadInput(f"--gensteps-kind must be one of {', '.join(GENSTEP_KINDS)}")
        if (self.gensteps_file or self.gensteps_kind != "torch") and not self.scene:
            raise BadInput(
                "--gensteps-kind and --gensteps-file need --scene (the scene they belong to)"
            )

    @property
    def width(self) -> int:
        return self.event_bytes // 4


def source_names(n: int) -> list[str]:
    return [DETECTORS[k] if k < len(DETECTORS) else f"det{k:02d}" for k in range(n)]


def chunk_rows_for(row_bytes: int) -> int:
    """Rows per HDF5 chunk: about 1 MiB per chunk, at least one event."""
    return max(1, (1 << 20) // max(1, row_bytes))


def principal_table(spec: MockSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """timestamps, run ids (MET s) and colors of every event of the downlink."""
    rng = np.random.default_rng([spec.seed, int(spec.dlid), 0])
    t0 = dlid_start_met(spec.dlid) * NS
    idx = np.arange(spec.events, dtype=np.uint64)
    jitter = rng.integers(0, 1000, spec.events, dtype=np.uint64)
    ts = np.uint64(t0) + idx * np.uint64(EVENT_PERIOD_NS) + jitter
    bounds = np.linspace(0, spec.events, spec.runs + 1).astype(np.int64)
    for r in range(1, spec.runs):
        # acquisitions are separated: each run starts on a whole MET second at least one
        # second after the previous run's last event, so run ids are distinct at any rate
        a = int(bounds[r])
        start = (int(ts[a - 1]) // NS + 2) * NS
        ts[a:] += np.uint64(start - int(ts[a]))
    run = np.empty(spec.events, dtype=np.int64)
    for r in range(spec.runs):
        run[bounds[r] : bounds[r + 1]] = int(ts[bounds[r]]) // NS
    colors = COLORS[rng.integers(0, 3, spec.events)]
    return ts, run, colors


def secondary_keep(spec: MockSpec, k: int) -> np.ndarray:
    """Boolean mask of the principal events source ``k`` holds (it drops a random share)."""
    rng = np.random.default_rng([spec.seed, int(spec.dlid), k])
    share = rng.uniform(0.5, 0.9)
    return rng.random(spec.events) < share


def write_source(
    path: Path,
    ts: np.ndarray,
    width: int,
    salt: int,
    smalldata: dict[str, np.ndarray] | None = None,
    advance: Callable[[int], None] | None = None,
) -> None:
    """Write one source file, payload in bounded blocks, under a temporary name."""
    row_bytes = width * 4
    crow = chunk_rows_for(row_bytes)
    block = max(crow, (BLOCK_BYTES // row_bytes) // crow * crow)
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=False) as f:
        f.create_dataset("timestamp", data=ts, dtype="u8", track_times=False)
        d = f.create_dataset(
            "data",
            shape=(len(ts), width),
            dtype="i4",
            chunks=(min(crow, max(1, len(ts))), width),
            track_times=False,
        )
        d.attrs["payload_scheme"] = PAYLOAD_SCHEME
        d.attrs["payload_salt"] = salt
        buf = np.empty((min(block, max(1, len(ts))), width), dtype=np.int32)
        for a in range(0, len(ts), block):
            b = min(a + block, len(ts))
            rows_for(ts[a:b], width, salt, out=buf[: b - a])
            d[a:b] = buf[: b - a]
            if advance:
                advance(b - a)
        if smalldata:
            g = f.create_group("smalldata", track_order=False)
            for key, arr in smalldata.items():
                g.create_dataset(key, data=arr, track_times=False)


def retdefs(spec: MockSpec, ts: np.ndarray, run: np.ndarray) -> list[RetDef]:
    bounds = np.linspace(0, spec.events, spec.chunks + 1).astype(np.int64)
    half = EVENT_PERIOD_NS // 2
    gndid = f"{(int(spec.dlid) * 2654435761 + spec.seed) & 0xFFFFFFFF:08x}"
    out = []
    for c in range(spec.chunks):
        a, b = int(bounds[c]), int(bounds[c + 1])
        tbeg = round((int(ts[a]) - half) / NS, 6)
        tend = round((int(ts[b - 1]) + half) / NS, 6)
        out.append(
            RetDef(
                type="LSEP",
                scid=77,
                arch="level0",
                runid=int(run[a]),
                l0key=1_000_000 + int(spec.dlid) % 100_000 * 10 + c,
                chunkid=c + 1,
                gndid=gndid,
                start=float(run[a]),
                spans=tuple(Span(apid, tbeg, tend) for apid in LPA_APIDS),
            )
        )
    return out


def projected_bytes(spec: MockSpec) -> int:
    kept = 1.0 + 0.9 * (spec.sources - 1)
    return int(spec.events * spec.width * 4 * kept) + 64 * 1024 * spec.sources


def write_files(
    spec: MockSpec, directory: Path, advance: Callable[[int], None] | None = None
) -> list[str]:
    """Write every source file and RetDef into ``directory``; return the file names."""
    ts, run, colors = principal_table(spec)
    names = []
    for k, src in enumerate(source_names(spec.sources)):
        if k == 0:
            write_source(
                directory / f"{src}.h5",
                ts,
                spec.width,
                k,
                smalldata={"color": colors, "run": run},
                advance=advance,
            )
        else:
            keep = secondary_keep(spec, k)
            write_source(directory / f"{src}.h5", ts[keep], spec.width, k, advance=advance)
        names.append(f"{src}.h5")
    for rd in retdefs(spec, ts, run):
        name = retdef_name(spec.dlid, rd.chunkid)
        atomic_write_bytes(directory / name, to_xml(rd))
        names.append(name)
    if spec.scene:
        names.extend(write_gensteps(spec, directory))
    return names


def write_gensteps(spec: MockSpec, directory: Path) -> list[str]:
    """A delivery that carries gensteps (its stream then adds a propagate process): the
    scene's torch source, mock muons' Cerenkov or electrons' scintillation steps
    (engine.mock.gensteps), or a given genstep file, checked against the scene first, with
    its material map (``<stem>.materials.json``) as ``gensteps.materials.json``."""
    import io

    from engine.core.workspace import packaged_scene
    from engine.mock.gensteps import cerenkov_tracks, scintillation_tracks
    from engine.propagate import gensteps as G
    from engine.propagate.scene import gensteps, load_scene

    assert spec.scene, "write_gensteps needs spec.scene"  # the caller checks
    scene = load_scene(packaged_scene(spec.scene))
    names = ["gensteps.npy", "scene.txt"]
    if spec.gensteps_file:
        src = Path(spec.gensteps_file)
        G.load(src, scene)  # refuse here what the propagate job would refuse
        gs = G.read_array(src)
        side = G.sidecar_for(src)
        if side.is_file():
            atomic_write_bytes(
                directory / G.sidecar_for(Path("gensteps.npy")).name, side.read_bytes()
            )
            names.append(G.sidecar_for(Path("gensteps.npy")).name)
    elif spec.gensteps_kind == "cerenkov":
        gs = cerenkov_tracks(scene, spec.gensteps_photons, spec.seed)
    elif spec.gensteps_kind == "scintillation":
        gs = scintillation_tracks(scene, spec.gensteps_photons, spec.seed)
    else:
        if scene.source is None:
            raise BadInput(
                f"scene {spec.scene} has no [source] for torch gensteps "
                "(--gensteps-kind cerenkov or scintillation?)"
            )
        gs = gensteps(scene.source, spec.gensteps_photons or None, scene.container_material)
    buf = io.BytesIO()
    np.save(buf, gs)
    atomic_write_bytes(directory / "gensteps.npy", buf.getvalue())
    atomic_write_bytes(directory / "scene.txt", f"{spec.scene}\n".encode())
    return names


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def deliver(
    spec: MockSpec,
    as_: str,
    target: Path,
    reserve: int = 0,
    advance: Callable[[int], None] | None = None,
) -> Path:
    """Make the delivery. ``as_`` is level0 or fcopy (``target`` = that incoming dir) or dir."""
    spec.validate()
    need = projected_bytes(spec) * (2 if as_ == "fcopy" else 1)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"cannot create output directory: {err.strerror}", target) from None
    if as_ == "dir":
        check_space(target, need, reserve, "mock delivery")
        names = write_files(spec, target, advance)
        manifest.write(target, names)
        return target
    if as_ == "level0":
        dest = target / spec.dlid
        if (dest / manifest.MANIFEST_NAME).exists():
            raise BadInput("downlink already delivered (MANIFEST.md5 exists)", dest)
        check_space(target, need, reserve, "mock delivery")
        dest.mkdir(parents=True, exist_ok=True)
        names = write_files(spec, dest, advance)
        manifest.write(dest, names)  # last: its presence means the delivery is complete
        return dest
    if as_ == "fcopy":
        tar_path = target / f"{spec.dlid}.tar"
        md5_path = target / f"{spec.dlid}.md5"
        if tar_path.exists() or md5_path.exists():
            raise BadInput("fcopy package already delivered", tar_path)
        check_space(target, need, reserve, "mock delivery")
        work = target / f".mock-{spec.dlid}.tmp-{os.getpid()}"
        remove_path(work)
        work.mkdir()
        try:
            names = write_files(spec, work, advance)
            manifest.write(work, names)
            with (
                atomic_path(tar_path) as tmp,
                tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf,
            ):
                for n in [*names, manifest.MANIFEST_NAME]:
                    tf.add(work / n, arcname=n, filter=_tar_filter)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        manifest.write(target, [tar_path.name], md5_path)  # the package manifest arrives last
        return tar_path
    raise BadInput(f"unknown delivery form {as_!r}: expected level0, fcopy or dir")
