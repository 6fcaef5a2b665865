"""`make gpu-check`: prove the GPU backends on a bare GPU machine in one command.

A session lent a GPU gets about 15 minutes of device time in all, a bare machine each
start and no network, so the whole proof is one prepared command that needs only what
`make gpu-bundle` prepared (``.gpu-bundle/``, carried with the call) and what the device
image has (Python 3.12, nvcc and the CUDA headers, CuPy, numpy, h5py, pytest, hypothesis).
Within a time budget (default 450 s) it:

0. verifies the bundle against its MANIFEST.json and installs its wheels into a target
   folder; finds the GPU through the driver (libcuda) and stops with one line and exit 1
   when there is none; starts building PyCUDA from its sdist in the background (with the
   compiler's units in parallel), so the CuPy steps run meanwhile;
1. runs the ``gpu``-marked tests, for each GPU backend;
2. propagates tboolean-box with NumPy and each GPU backend, same seed, development mode,
   1e6 photons, and compares photon by photon: seqhis, final positions and times, hit sets;
   the same for the JUNO-like GDML detector (2e5 photons: the BVH and CSG solids);
   the same for Cerenkov gensteps (muons crossing water-tank) and scintillation gensteps
   (electrons stopping in scint-tank), made on the spot by engine.mock.gensteps;
3. measures photons/s in production mode at 1e7, 1e8 and 1e9 photons (kernel time from
   the event's meta.json, the propagation and the whole process timed, hits copied back
   and ht.npy written), and in development mode at 1e6; Cerenkov and scintillation
   gensteps at 1e7 and 1e8 photons;
4. writes report.json and report.md (device, driver, versions, every figure) into $OUT
   when set (the device tool returns that folder), else ``.gpu-check/``, after every step.

Every step is time-boxed; a failed or timed-out step is recorded and the next one runs.
Hits are photons that reflected at least once (hit mask BR, about 12 % of tboolean-box's
photons), so production runs copy back and write a real hit file; the scene's own mask
(SD) gives none there.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tests.gpu.bundle import PLATFORMS, sha256

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "assets" / "scenes" / "tboolean-box.toml"
# genstep kinds besides the torch: (scene, mock track maker, hit mask)
STEP_KINDS = {
    "cerenkov": (ROOT / "assets" / "scenes" / "water-tank.toml", "cerenkov_tracks"),
    "scintillation": (ROOT / "assets" / "scenes" / "scint-tank.toml", "scintillation_tracks"),
}
HITMASK = "BR"
# a GDML detector: the JUNO-like example (2,000 PMTs, CSG unions, the BVH), torch photons
# from its centre, hit mask SD: parity and production rates like the other kinds
GDML_SCENE = ROOT / "assets" / "scenes" / "juno-like.toml"
SEED = 7
BACKENDS = ("cupy", "cuda")  # CuPy first: it needs no build, PyCUDA builds meanwhile
LIBCUDA_DIRS = (
    "/usr/local/cuda/lib64/stubs",
    "/usr/local/cuda/targets/x86_64-linux/lib/stubs",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
)


class NoGpu(Exception):
    """No usable CUDA device: the check ends with one line and exit 1."""


@dataclass
class Step:
    name: str
    status: str = "pending"  # ok, failed, timeout, skipped
    seconds: float = 0.0
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    out: Path
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    budget_s: float = 450.0
    gpu: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    def step(
        self, name: str, fn: Callable[[Step], Any], limit: float, skip: str | None = None
    ) -> Step:
        """Run ``fn(step)`` with at most ``limit`` seconds (and what the budget has left);
        record ok, failed (the error's last line), timeout or skipped, and write the report."""
        st = Step(name)
        self.steps.append(st)
        t = time.monotonic()
        room = min(limit, self.left() - 5)
        if skip is not None or room < 5:
            st.status, st.detail = "skipped", skip or "out of time"
        else:
            st.data["limit_s"] = round(room, 1)
            try:
                fn(st)
                st.status = "ok" if st.status == "pending" else st.status
            except subprocess.TimeoutExpired as err:
                st.status, st.detail = "timeout", f"still running after {err.timeout:.0f} s"
            except NoGpu:
                st.status = "failed"
                raise
            except Exception as err:
                st.status = "failed"
                st.detail = f"{type(err).__name__}: {err}".strip().splitlines()[-1][:400]
                st.data["traceback"] = traceback.format_exc().splitlines()[-6:]
        st.seconds = round(time.monotonic() - t, 2)
        print(
            f"gpu-check: {name}: {st.status} in {st.seconds:.1f} s {st.detail}".rstrip(), flush=True
        )
        self.write()
        return st

    def get(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "elapsed_s": round(time.monotonic() - self.t0, 1),
            "budget_s": self.budget_s,
            "gpu": self.gpu,
            "versions": self.versions,
            "steps": [asdict(s) for s in self.steps],
        }

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        d = self.to_dict()
        for name, text in (
            ("report.json", json.dumps(d, indent=1, default=str) + "\n"),
            ("report.md", render_markdown(d)),
        ):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)


# ---------------------------------------------------------------------------- helpers


def sh(
    cmd: list[str],
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    log: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if log is not None:
        log.write_text(f"$ {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or [""]
        raise RuntimeError(
            f"{Path(cmd[0]).name} {' '.join(cmd[1:3])} exited {r.returncode}: {tail[0]}"
        )
    return r


def verify_bundle(bundle: Path) -> dict[str, Any]:
    """MANIFEST.json's files, each present with its size and sha256."""
    try:
        manifest = json.loads((bundle / "MANIFEST.json").read_text())
    except (OSError, ValueError) as err:
        raise RuntimeError(
            f"{bundle}: no readable MANIFEST.json ({err}): run `make gpu-bundle` "
            "and carry the folder"
        ) from None
    for name, f in manifest["files"].items():
        p = bundle / name
        if not p.is_file() or p.stat().st_size != f["bytes"] or sha256(p) != f["sha256"]:
            raise RuntimeError(f"{p}: missing or not the file MANIFEST.json names")
    return manifest


def install_wheels(bundle: Path, manifest: dict[str, Any], site: Path, timeout: float) -> list[str]:
    """Every bundled wheel into ``site`` (tags of the bundle's Python, whatever runs this)."""
    wheels = [str(bundle / n) for n in manifest["files"] if n.endswith(".whl")]
    plat = [a for p in manifest.get("platforms", PLATFORMS) for a in ("--platform", p)]
    shutil.rmtree(site, ignore_errors=True)
    sh(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--target",
            str(site),
            "--python-version",
            manifest.get("python", "3.12"),
            "--implementation",
            "cp",
            "--only-binary=:all:",
            *plat,
            *wheels,
        ],
        timeout,
    )
    return [Path(w).name for w in wheels]


def detect_gpu(libcuda: str | None) -> dict[str, Any]:
    """Device 0 through the driver API (no Python GPU package needed); NoGpu if none."""
    names = [libcuda] if libcuda else ["libcuda.so.1", "libcuda.so"]
    lib = None
    for n in names:
        with contextlib.suppress(OSError):
            lib = ctypes.CDLL(n)
            break
    if lib is None:
        raise NoGpu(f"{names[0]} does not load (no NVIDIA driver here)")
    rc = lib.cuInit(0)
    if rc != 0:
        raise NoGpu(f"cuInit failed (CUresult {rc})")
    count, dev, ver = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    lib.cuDeviceGetCount(ctypes.byref(count))
    if count.value < 1:
        raise NoGpu("the driver sees no CUDA device")
    lib.cuDeviceGet(ctypes.byref(dev), 0)
    name = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(name, 256, dev)
    cc = []
    for attr in (75, 76):  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
        v = ctypes.c_int()
        lib.cuDeviceGetAttribute(ctypes.byref(v), attr, dev)
        cc.append(v.value)
    mem = ctypes.c_size_t()
    lib.cuDeviceTotalMem_v2(ctypes.byref(mem), dev)
    lib.cuDriverGetVersion(ctypes.byref(ver))
    info = {
        "count": count.value,
        "name": name.value.decode(errors="replace"),
        "cc": f"{cc[0]}.{cc[1]}",
        "memory_bytes": mem.value,
        "cuda_driver_api": f"{ver.value // 1000}.{ver.value % 1000 // 10}",
    }
    smi = shutil.which("nvidia-smi")
    if smi:
        with contextlib.suppress(Exception):
            r = subprocess.run(
                [smi, "--query-gpu=driver_version,name,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            info["nvidia_smi"] = r.stdout.strip().splitlines()[0]
            info["driver"] = info["nvidia_smi"].split(",")[0].strip()
    return info


def find_cuda_root() -> Path:
    """The toolkit whose include/cuda.h PyCUDA compiles against: $CUDA_HOME, $CUDA_PATH,
    /usr/local/cuda, else nvcc's folder's parent (nvcc may be a wrapper script elsewhere)."""
    nvcc = shutil.which("nvcc")
    for root in (
        os.environ.get("CUDA_HOME"),
        os.environ.get("CUDA_PATH"),
        "/usr/local/cuda",
        nvcc and str(Path(nvcc).resolve().parent.parent),
    ):
        if root and (Path(root) / "include" / "cuda.h").is_file():
            return Path(root)
    raise RuntimeError("no CUDA toolkit with include/cuda.h (set CUDA_HOME)")


def find_libcuda_dir(work: Path) -> Path:
    """A folder holding ``libcuda.so`` to link PyCUDA against (the toolkit's stub, else the
    driver's library, through a link of that name if only ``libcuda.so.1`` exists)."""
    for d in LIBCUDA_DIRS:
        if (Path(d) / "libcuda.so").exists():
            return Path(d)
    for d in LIBCUDA_DIRS:
        if (Path(d) / "libcuda.so.1").exists():
            link = work / "libcuda"
            link.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                (link / "libcuda.so").symlink_to(Path(d) / "libcuda.so.1")
            return link
    raise RuntimeError("no libcuda.so or libcuda.so.1 to link PyCUDA against")


# the sdist's setup.py compiles one extension's ~50 units one after another; this runs them
# on every core (the same distutils calls, in a thread pool)
PARALLEL_SETUP = '''
import os, sys
from concurrent.futures import ThreadPoolExecutor
import setuptools
from setuptools._distutils import ccompiler

def parallel_compile(self, sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                     extra_preargs=None, extra_postargs=None, depends=None):
    macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
        output_dir, macros, include_dirs, sources, depends, extra_postargs)
    cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)
    def one(obj):
        src, ext = build[obj]
        self._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(one, objects))
    return objects

ccompiler.CCompiler.compile = parallel_compile
sys.argv = ["setup.py", "build_ext", "--inplace"]
sys.path.insert(0, os.getcwd())
exec(compile(open("setup.py").read(), "setup.py", "exec"), {"__name__": "__main__"})
'''


def start_pycuda_build(
    bundle: Path, manifest: dict[str, Any], work: Path, cuda_lib_dir: Path | None
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Unpack the sdist, configure it (CUDA root from nvcc, no curand, no GL) and start the
    build; returns (process, source folder to put on sys.path, log)."""
    sdist = next(bundle / n for n in manifest["files"] if n.startswith("pycuda-"))
    src_root = work / "pycuda-src"
    shutil.rmtree(src_root, ignore_errors=True)
    with tarfile.open(sdist) as tf:
        tf.extractall(src_root, filter="data")
    src = next(src_root.iterdir())
    cuda_root = find_cuda_root()
    libdir = cuda_lib_dir or find_libcuda_dir(work)
    log = work / "pycuda-build.log"
    sh(
        [
            sys.executable,
            "configure.py",
            f"--cuda-root={cuda_root}",
            "--no-cuda-enable-curand",
            f"--cudadrv-lib-dir={libdir}",
        ],
        60,
        cwd=src,
        log=work / "pycuda-configure.log",
    )
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", PARALLEL_SETUP], cwd=src, stdout=fh, stderr=subprocess.STDOUT
        )
    return proc, src, log


def env_with(paths: list[Path]) -> dict[str, str]:
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), *([old] if old else [])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def engine_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "engine", *map(str, args)]


# ---------------------------------------------------------------------------- comparison


def compare_events(a: Path, b: Path, atol_mm: float = 1e-2) -> dict[str, Any]:
    """Photon by photon, two development events of the same scene and seed: seqhis, final
    position and time (where the histories agree) and the hit sets (photon indices)."""
    sa, sb = np.load(a / "seq.npy"), np.load(b / "seq.npy")
    if sa.shape != sb.shape:
        raise ValueError(f"photon counts differ: {sa.shape[0]} vs {sb.shape[0]}")
    same = sa == sb
    oa, ob = np.load(a / "ox.npy", mmap_mode="r"), np.load(b / "ox.npy", mmap_mode="r")
    pa, pb = np.asarray(oa[:, 0, :3])[same], np.asarray(ob[:, 0, :3])[same]
    ta, tb = np.asarray(oa[:, 0, 3])[same], np.asarray(ob[:, 0, 3])[same]
    dpos = np.abs(pa - pb).max(axis=1) if len(pa) else np.zeros(0)
    dt = np.abs(ta - tb)
    ha = set(np.load(a / "ht.npy").view(np.uint32)[:, 3, 2].tolist())
    hb = set(np.load(b / "ht.npy").view(np.uint32)[:, 3, 2].tolist())
    n = int(sa.shape[0])
    out = {
        "photons": n,
        "seqhis_equal": int(same.sum()),
        "seqhis_agreement": float(same.mean()) if n else 1.0,
        "position_max_abs_mm": float(dpos.max()) if dpos.size else 0.0,
        "position_within_tol": float(np.mean(dpos <= atol_mm)) if dpos.size else 1.0,
        "position_tol_mm": atol_mm,
        "time_max_abs_ns": float(dt.max()) if dt.size else 0.0,
        "hits_a": len(ha),
        "hits_b": len(hb),
        "hits_only_a": len(ha - hb),
        "hits_only_b": len(hb - ha),
    }
    out["agree"] = bool(
        out["seqhis_agreement"] >= 0.999
        and out["position_within_tol"] >= 0.999
        and out["hits_only_a"] + out["hits_only_b"] <= 0.001 * max(1, n)
    )
    return out


# ---------------------------------------------------------------------------- the steps


def make_gensteps(kind: str, photons: int, path: Path) -> Path:
    """A genstep file of exactly ``photons`` photons of one kind: one mock delivery's
    tracks (engine.mock.gensteps), repeated as often as needed, the last genstep cut."""
    import engine.mock.gensteps as mock
    from engine.propagate.scene import load_scene

    scene_path, maker = STEP_KINDS[kind]
    base = getattr(mock, maker)(load_scene(scene_path), min(photons, 200_000), SEED)
    base = base[base.view(np.int32)[:, 0, 3] > 0]
    per = int(base.view(np.int32)[:, 0, 3].astype(np.int64).sum())
    gs = np.tile(base, (max(1, -(-photons // per)), 1, 1))
    ends = np.cumsum(gs.view(np.int32)[:, 0, 3].astype(np.int64))
    last = int(np.searchsorted(ends, photons))  # the genstep holding photon number `photons`
    gs = gs[: last + 1].copy()
    gs.view(np.int32)[last, 0, 3] -= int(ends[last] - photons)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, gs)
    return path


def run_propagate(
    out: Path,
    photons: int,
    backend: str,
    mode: str,
    env: dict[str, str],
    timeout: float,
    kind: str = "torch",
    gensteps: Path | None = None,
) -> dict[str, Any]:
    """One event through the real CLI; meta.json plus the process's wall time. Torch
    photons of tboolean-box (hit mask BR), or a genstep file of ``kind`` (hit mask SD)."""
    t = time.perf_counter()
    if kind == "gdml":
        args = [GDML_SCENE, "--photons", str(photons)]
    elif gensteps is None:
        args = [SCENE, "--photons", str(photons), "--hitmask", HITMASK]
    else:
        args = [STEP_KINDS[kind][0], "--gensteps", gensteps]
    r = sh(
        engine_cmd(
            "propagate",
            *args,
            "-o",
            out,
            "--seed",
            str(SEED),
            "--mode",
            mode,
            "--backend",
            backend,
            "--json",
        ),
        timeout,
        env,
    )
    wall = time.perf_counter() - t
    meta = json.loads(r.stdout.strip().splitlines()[-1])
    photons = meta["photons"]
    row = {
        "kind": kind,
        "backend": backend,
        "mode": mode,
        "photons": photons,
        "hits": meta["hits"],
        "ht_bytes": meta["files"].get("ht.npy"),
        "device": meta["device"],
        "launches": meta.get("launches"),
        "process_s": round(wall, 3),
        "propagate_s": meta["propagate_seconds"],
        "kernel_s": meta.get("kernel_seconds"),
        "process_pps": photons / wall,
        "propagate_pps": meta["photons_per_second"],
    }
    if meta.get("kernel_seconds"):
        row["kernel_pps"] = photons / meta["kernel_seconds"]
    return row


def versions(env: dict[str, str]) -> dict[str, Any]:
    code = (
        "import json, sys, numpy\nv = {'python': sys.version.split()[0], 'numpy': numpy.__version__}\n"
        "for m in ('cupy', 'pycuda', 'h5py', 'mpi4py', 'pytest'):\n"
        "    try:\n        v[m] = __import__(m).__version__\n"
        "    except Exception as e:\n        v[m] = f'absent ({type(e).__name__})'\n"
        "from engine import __version__\nfrom engine.propagate import kernel\n"
        "v['skydeck'] = __version__; v['kernel_key'] = kernel.kernel_key()\n"
        "v['compilers'] = kernel.compilers()\nprint(json.dumps(v))\n"
    )
    r = sh([sys.executable, "-c", code], 60, env)
    v = json.loads(r.stdout)
    nvcc = shutil.which("nvcc")
    if nvcc:
        with contextlib.suppress(Exception):
            out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=20)
            v["nvcc"] = out.stdout.strip().splitlines()[-1]
    with contextlib.suppress(Exception):
        v["commit"] = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    v["platform"] = platform.platform()
    v["cpus"] = os.cpu_count()
    return v


def render_markdown(d: dict[str, Any]) -> str:
    g = d["gpu"]
    lines = [
        f"# GPU check, {d['started']}",
        "",
        f"Device: {g.get('name', '?')} (cc {g.get('cc', '?')}, "
        f"{g.get('memory_bytes', 0) / 2**30:.0f} GiB), driver {g.get('driver', '?')}, "
        f"CUDA driver API {g.get('cuda_driver_api', '?')}. Elapsed {d['elapsed_s']} s of "
        f"a {d['budget_s']:.0f} s budget.",
        "",
    ]
    v = d["versions"]
    if v:
        lines += [
            "Versions: "
            + ", ".join(f"{k} {v[k]}" for k in sorted(v) if not isinstance(v[k], dict)),
            "",
        ]
        if isinstance(v.get("compilers"), dict):
            lines += [
                "Kernel compilers: " + ", ".join(f"{k} {c}" for k, c in v["compilers"].items()),
                "",
            ]
    lines += ["| step | status | seconds | detail |", "|---|---|---|---|"]
    lines += [
        f"| {s['name']} | {s['status']} | {s['seconds']} | {s['detail']} |" for s in d["steps"]
    ]
    par = [
        (s, kind, s["data"] if kind == "torch" else s["data"].get(kind))
        for s in d["steps"]
        if s["name"].startswith("parity") and "agree" in s["data"]
        for kind in ("torch", *STEP_KINDS, "gdml")
    ]
    par = [p for p in par if isinstance(p[2], dict) and "agree" in p[2]]
    if par:
        lines += [
            "",
            f"## Parity with NumPy: development, seed {SEED} (torch: tboolean-box, hit "
            f"mask {HITMASK}; cerenkov: water-tank; scintillation: scint-tank; gdml: juno-like)",
            "",
            "| backend | kind | photons | seqhis equal | positions within tol | max dpos mm | "
            "max dt ns | hits numpy / gpu | only numpy / only gpu | agree |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s, kind, c in par:
            lines.append(
                f"| {s['name'].split('-', 1)[1]} | {kind} | {c['photons']:,} | "
                f"{100 * c['seqhis_agreement']:.4f} % | {100 * c['position_within_tol']:.4f} % | "
                f"{c['position_max_abs_mm']:.3g} | {c['time_max_abs_ns']:.3g} | "
                f"{c['hits_a']:,} / {c['hits_b']:,} | {c['hits_only_a']} / {c['hits_only_b']} | "
                f"{c['agree']} |"
            )
    rows = [
        r for s in d["steps"] if s["name"].startswith("rate") for r in s["data"].get("rows", [])
    ]
    if rows:
        lines += [
            "",
            f"## Photons per second (torch: tboolean-box, hit mask {HITMASK})",
            "",
            "| backend | kind | mode | photons | hits | ht.npy B | launches | kernel s | "
            "kernel photons/s | propagate photons/s | process s | process photons/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['backend']} | {r.get('kind', 'torch')} | {r['mode']} | "
                f"{r['photons']:.2e} | {r['hits']:,} | "
                f"{r['ht_bytes'] or 0:,} | {r.get('launches')} | {r.get('kernel_s') or 0:.4f} | "
                f"{r.get('kernel_pps', 0):.3e} | {r['propagate_pps'] or 0:.3e} | "
                f"{r['process_s']:.2f} | {r['process_pps']:.3e} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make gpu-check", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / ".gpu-bundle")
    ap.add_argument(
        "--out", type=Path, default=None, help="report folder (default: $OUT, else .gpu-check)"
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/skydeck-gpu-check"))
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for everything")
    ap.add_argument("--sizes", default="1e7,1e8,1e9", help="production photon counts")
    ap.add_argument("--parity-photons", type=float, default=1e6)
    ap.add_argument("--dev-photons", type=float, default=1e6, help="development-mode rate run")
    ap.add_argument(
        "--step-photons",
        type=float,
        default=1e6,
        help="Cerenkov and scintillation photons of the parity events",
    )
    ap.add_argument(
        "--step-sizes",
        default="1e7,1e8",
        help="Cerenkov and scintillation photons of the production rate runs",
    )
    ap.add_argument(
        "--gdml-photons",
        type=float,
        default=2e5,
        help="photons of the GDML (juno-like) parity events",
    )
    ap.add_argument(
        "--gdml-sizes",
        default="1e7,1e8",
        help="GDML (juno-like) photons of the production rate runs",
    )
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument(
        "--libcuda", default=None, help="driver library to probe (default: libcuda.so.1)"
    )
    ap.add_argument(
        "--cuda-lib-dir",
        type=Path,
        default=None,
        help="folder with libcuda.so to link PyCUDA against (default: searched)",
    )
    args = ap.parse_args(argv)
    out = args.out or Path(os.environ.get("OUT") or ROOT / ".gpu-check")
    rep = Report(out, budget_s=args.budget)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    site = work / "site"
    paths = [site]
    state: dict[str, Any] = {}

    def bundle(st: Step) -> None:
        state["manifest"] = verify_bundle(args.bundle)
        st.data["files"] = install_wheels(args.bundle, state["manifest"], site, st.data["limit_s"])

    rep.step("bundle", bundle, 60)
    try:
        rep.step("gpu", lambda st: rep.gpu.update(detect_gpu(args.libcuda)), 30)
    except NoGpu as err:
        rep.steps[-1].detail = str(err)
        rep.write()
        print(f"gpu-check: no CUDA GPU: {err}; report in {out}", file=sys.stderr)
        return 1

    def build_start(st: Step) -> None:
        proc, src, log = start_pycuda_build(args.bundle, state["manifest"], work, args.cuda_lib_dir)
        state.update(build=proc, pycuda_src=src, build_log=log, build_t0=time.monotonic())

    rep.step(
        "pycuda-build-start", build_start, 60, skip=None if "manifest" in state else "no bundle"
    )
    rep.step("versions", lambda st: rep.versions.update(versions(env_with(paths))), 60)
    backends = [b for b in args.backends.split(",") if b]
    n_par = int(args.parity_photons)
    events = work / "events"
    shutil.rmtree(events, ignore_errors=True)

    gsdir = work / "gensteps"

    def reference(st: Step) -> None:
        st.data["row"] = run_propagate(
            events / "numpy", n_par, "numpy", "development", env_with(paths), st.data["limit_s"]
        )
        for kind in STEP_KINDS:  # the same event of each genstep kind, on the CPU
            gs = make_gensteps(kind, int(args.step_photons), gsdir / f"{kind}-parity.npy")
            st.data[kind] = run_propagate(
                events / f"numpy-{kind}",
                0,
                "numpy",
                "development",
                env_with(paths),
                st.data["limit_s"],
                kind,
                gs,
            )
        st.data["gdml"] = run_propagate(
            events / "numpy-gdml",
            int(args.gdml_photons),
            "numpy",
            "development",
            env_with(paths),
            st.data["limit_s"],
            "gdml",
        )

    for backend in backends:
        if backend == "cuda":

            def wait_build(st: Step) -> None:
                proc = state["build"]
                try:
                    rc = proc.wait(timeout=st.data["limit_s"])
                finally:
                    st.data["build_s"] = round(time.monotonic() - state["build_t0"], 1)
                    with contextlib.suppress(OSError):
                        st.data["log_tail"] = state["build_log"].read_text().splitlines()[-15:]
                if rc != 0:
                    raise RuntimeError(f"PyCUDA build exited {rc} (log: {state['build_log']})")
                paths.insert(0, state["pycuda_src"])
                r = sh(
                    [
                        sys.executable,
                        "-c",
                        "import pycuda, pycuda.driver as d; d.init(); "
                        "print('pycuda', pycuda.VERSION_TEXT, 'CUDA', d.get_version(), "
                        "'driver', d.get_driver_version(), d.Device(0).name())",
                    ],
                    60,
                    env_with(paths),
                )
                st.detail = r.stdout.strip()

            st = rep.step(
                "pycuda-build",
                wait_build,
                300,
                skip=None if "build" in state else "the build did not start",
            )
            if st.status != "ok":
                for name in ("tests-cuda", "parity-cuda", "rate-cuda"):
                    rep.step(name, lambda st: None, 1, skip="PyCUDA is not built")
                continue

        def tests(st: Step, backend: str = backend) -> None:
            # -k: the parameter id ("cuda" alone also matches the module test_cuda.py)
            sel = "cuda and not cupy" if backend == "cuda" else backend
            r = sh(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-m",
                    "gpu",
                    "-k",
                    sel,
                    "-rs",
                    "tests/propagate/test_cuda.py",
                ],
                st.data["limit_s"],
                env_with(paths),
                log=work / f"tests-{backend}.log",
            )
            st.detail = r.stdout.strip().splitlines()[-1]
            if "skipped" in st.detail and "passed" not in st.detail:
                raise RuntimeError(f"every gpu test skipped: {st.detail}")

        rep.step(f"tests-{backend}", tests, 150)
        if rep.get("reference") is None:
            rep.step("reference", reference, 120)

        def parity(st: Step, backend: str = backend) -> None:
            if rep.get("reference").status != "ok":
                raise RuntimeError("no NumPy reference event")
            st.data["row"] = run_propagate(
                events / backend, n_par, backend, "development", env_with(paths), st.data["limit_s"]
            )
            st.data.update(compare_events(events / "numpy", events / backend))
            st.detail = (
                f"seqhis {100 * st.data['seqhis_agreement']:.4f} %, hits "
                f"{st.data['hits_a']}/{st.data['hits_b']}"
            )
            agree = st.data["agree"]
            shutil.rmtree(events / backend, ignore_errors=True)
            for kind in STEP_KINDS:
                out = events / f"{backend}-{kind}"
                run_propagate(
                    out,
                    0,
                    backend,
                    "development",
                    env_with(paths),
                    max(5.0, st.data["limit_s"] / 3),
                    kind,
                    gsdir / f"{kind}-parity.npy",
                )
                st.data[kind] = c = compare_events(events / f"numpy-{kind}", out)
                st.detail += f"; {kind} seqhis {100 * c['seqhis_agreement']:.4f} %"
                agree = agree and c["agree"]
                shutil.rmtree(out, ignore_errors=True)
            out = events / f"{backend}-gdml"
            run_propagate(
                out,
                int(args.gdml_photons),
                backend,
                "development",
                env_with(paths),
                max(5.0, st.data["limit_s"] / 3),
                "gdml",
            )
            st.data["gdml"] = c = compare_events(events / "numpy-gdml", out)
            st.detail += f"; gdml seqhis {100 * c['seqhis_agreement']:.4f} %"
            agree = agree and c["agree"]
            shutil.rmtree(out, ignore_errors=True)
            if not agree:
                st.status = "failed"

        rep.step(f"parity-{backend}", parity, 120)

        def rates(st: Step, backend: str = backend) -> None:
            st.data["rows"] = rows = []
            # smallest first: a run cut off by the time box loses only the largest figure
            runs: list[tuple[int, str, str]] = [(int(args.dev_photons), "development", "torch")]
            sizes = [int(float(s)) for s in args.step_sizes.split(",") if s]
            gsizes = [int(float(s)) for s in args.gdml_sizes.split(",") if s]
            for i, photons in enumerate(int(float(s)) for s in args.sizes.split(",") if s):
                runs.append((photons, "production", "torch"))
                if i < len(sizes):  # interleaved: a time box cuts the largest of each kind
                    runs += [(sizes[i], "production", kind) for kind in STEP_KINDS]
                if i < len(gsizes):
                    runs.append((gsizes[i], "production", "gdml"))
            for photons, mode, kind in runs:
                left = st.data["limit_s"] - sum(r["process_s"] for r in rows)
                gs = None if kind in ("torch", "gdml") else gsdir / f"{kind}-{photons:.0e}.npy"
                if gs is not None and not gs.exists():
                    make_gensteps(kind, photons, gs)
                rows.append(
                    run_propagate(
                        events / f"{backend}-rate",
                        photons,
                        backend,
                        mode,
                        env_with(paths),
                        max(5.0, left),
                        kind,
                        gs,
                    )
                )
                shutil.rmtree(events / f"{backend}-rate", ignore_errors=True)
                rep.write()
            best = max(
                (r.get("kernel_pps", 0) for r in rows if r["mode"] == "production"), default=0
            )
            st.detail = f"kernel {best:.3e} photons/s at best (production)"

        rep.step(f"rate-{backend}", rates, 200)
    shutil.rmtree(events, ignore_errors=True)
    shutil.rmtree(gsdir, ignore_errors=True)
    if "build" in state and state["build"].poll() is None:
        state["build"].kill()
    if "build_log" in state:
        with contextlib.suppress(OSError):
            shutil.copy(state["build_log"], out / "pycuda-build.log")
    rep.write()
    print((out / "report.md").read_text())
    return 0 if all(s.status in ("ok", "skipped") for s in rep.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
