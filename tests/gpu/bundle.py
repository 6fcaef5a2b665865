"""`make gpu-bundle`: what must travel to a bare GPU machine with no network.

The device machine (Python 3.12, nvcc, CuPy, h5py, numpy, mpi4py, pytest, hypothesis; see
the device tool's KINDS.md) lacks PyCUDA and a few pure-Python packages, and can fetch
nothing. This gathers them here, where PyPI is reachable, into an ignored folder that a
device call carries (``carry: [".gpu-bundle"]``), and writes MANIFEST.json (name, bytes,
sha256 of each file) that ``tests.gpu.check`` verifies before it installs anything:

- the PyCUDA sdist (built there, against that machine's CUDA headers and driver);
- PyCUDA's needs the image lacks: pytools (with siphash24, a cp312 wheel), platformdirs,
  mako (markupsafe and typing-extensions are in the image);
- the project as a wheel built with ``--no-deps``, and the project's needs the image lacks
  (defusedxml, watchdog; textual and mpich are not needed headless).

Versions are pinned so two bundles of one commit hold the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 64 * 2**20  # what a device call carries, working tree included
PYTHON = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
SDISTS = ("pycuda==2026.1",)
WHEELS = (
    "pytools==2026.1.1",
    "siphash24==1.9",
    "platformdirs==4.14.9",
    "mako==1.4.3",
    "defusedxml==0.7.1",
    "watchdog==7.1.0",
)


def pip(*args: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"gpu-bundle: pip {args[0]} failed:\n{tail}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(out: Path) -> dict:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for sdist in SDISTS:
        pip("download", "--no-deps", "--no-binary", sdist.split("==")[0], "-d", str(tmp), sdist)
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    pip(
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        PYTHON,
        "--implementation",
        "cp",
        *plat,
        "-d",
        str(tmp),
        *WHEELS,
    )
    pip("wheel", "--no-deps", "-w", str(tmp), str(ROOT))
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in sorted(tmp.iterdir())
    }
    manifest = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": PYTHON,
        "platforms": list(PLATFORMS),
        "sdists": list(SDISTS),
        "wheels": list(WHEELS),
        "files": files,
        "bytes": sum(f["bytes"] for f in files.values()),
    }
    if manifest["bytes"] > LIMIT // 2:
        raise SystemExit(
            f"gpu-bundle: {manifest['bytes']:,} B is more than half of what a "
            f"device call carries ({LIMIT:,} B with the working tree)"
        )
    (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make gpu-bundle", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="?", default=ROOT / ".gpu-bundle")
    args = ap.parse_args(argv)
    m = build(args.out)
    print(f"gpu-bundle: {len(m['files'])} files, {m['bytes'] / 2**20:.1f} MiB in {args.out}")
    for name, f in m["files"].items():
        print(f"  {f['bytes']:>10,}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
