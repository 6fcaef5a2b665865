"""The propagation kernel as a compiled image, built once per kernel hash and architecture.

Why: a GPU node should need the CUDA driver and nothing else. The kernel source
(``assets/kernels/propagate.cu``) is compiled with NVRTC, NVIDIA's run-time compiler, which
PyPI ships as a plain shared library (``nvidia-cuda-nvrtc-cu12``, in the ``cuda`` and
``test`` extras); ``nvcc`` is only a fallback. The result, a cubin for one ``sm_XX`` or PTX
for a ``compute_XX`` (which the driver compiles for newer chips), is cached under a name
holding the hash of the source and options, so a changed kernel never loads a stale image,
and ``skydeck-engine kernel build`` can precompile it for a site's nodes.

NVRTC is called through ctypes on its C API (six functions): no binding package, and the
same code runs where only the library is present. Both GPU backends compile with exactly
``compile_options()``; CuPy hands the same source and options to its own NVRTC.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from engine.core.atomic import atomic_write_bytes
from engine.core.errors import BadInput, JobFailed
from engine.core.workspace import ASSETS
from engine.propagate.generate import cerenkov, scint, torch
from engine.propagate.options import COMPILERS
from engine.propagate.scene import ICDF_N, N_PROP, WL_MIN, WL_N, WL_STEP

KERNEL_PATH = ASSETS / "kernels" / "propagate.cu"
KERNEL_NAME = "propagate"  # extern "C": the entry both backends look up
_ARCH = re.compile(r"(sm|compute)_([1-9][0-9]{1,2})(a|f)?")


def kernel_source() -> str:
    return KERNEL_PATH.read_text()


def compile_options() -> list[str]:
    """Defines shared with the NumPy backend, so both read the same constants; the same
    list goes to NVRTC, nvcc and CuPy."""
    return [
        f"-DWL_MIN={WL_MIN}f",
        f"-DWL_STEP={WL_STEP}f",
        f"-DWL_N={WL_N}",
        f"-DN_PROP={N_PROP}",
        f"-DICDF_N={ICDF_N}",
        f"-DTORCH_BLOCKS={torch.BLOCKS}",
        f"-DSCINT_BLOCKS={scint.BLOCKS}",
        f"-DMAX_CK_TRIES={cerenkov.MAX_CK_TRIES}",
        "--fmad=false",
    ]  # no FMA contraction: NumPy rounds a*b and +c separately


def kernel_key() -> str:
    """16 hex digits of sha256 over the source and the options: the cache key."""
    h = hashlib.sha256(kernel_source().encode())
    for opt in compile_options():
        h.update(b"\0" + opt.encode())
    return h.hexdigest()[:16]


def parse_arch(text: str) -> str:
    """``sm_90`` (a cubin for that chip) or ``compute_90`` (PTX the driver compiles for it
    and newer chips); ``90``, ``9.0`` and ``sm90`` are read as ``sm_90``."""
    t = str(text).strip().lower()
    m = re.fullmatch(r"([0-9])\.([0-9])", t)
    if m:
        t = f"sm_{m[1]}{m[2]}"
    elif t.isascii() and t.isdigit():
        t = f"sm_{t}"
    else:
        t = re.sub(r"^(sm|compute)(?=[0-9])", r"\1_", t)
    if not _ARCH.fullmatch(t):
        raise BadInput(f"--arch: {text!r} is not a CUDA architecture (e.g. sm_90, compute_80)")
    return t


def arch_of(cc: tuple[int, int]) -> str:
    """The cubin architecture of a device with compute capability ``cc``."""
    return f"sm_{cc[0]}{cc[1]}"


def is_cubin(arch: str) -> bool:
    return arch.startswith("sm_")


def cache_dir() -> Path:
    """``$SKYDECK_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/skydeck/kernels``, else
    ``~/.cache/skydeck/kernels``: a site points the first at a shared, prebuilt folder."""
    env = os.environ.get("SKYDECK_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "skydeck" / "kernels"


def image_name(arch: str) -> str:
    return f"{KERNEL_NAME}-{kernel_key()}-{arch}.{'cubin' if is_cubin(arch) else 'ptx'}"


@dataclass
class Image:
    """A compiled kernel: the bytes the driver loads (``module_from_buffer``), what it is
    for, and where it came from."""

    data: bytes
    arch: str
    compiler: str
    seconds: float = 0.0
    path: Path | None = None

    def valid(self) -> bool:
        """A cubin is an ELF object for CUDA (e_machine 190); PTX names the entry point."""
        if is_cubin(self.arch):
            return (
                len(self.data) > 20
                and self.data[:4] == b"\x7fELF"
                and int.from_bytes(self.data[18:20], "little") == 190
            )
        return f".entry {KERNEL_NAME}".encode() in self.data


# ---------------------------------------------------------------------------- NVRTC


def _nvrtc_candidates() -> list[str]:
    env = os.environ.get("SKYDECK_NVRTC")
    if env:
        return [env]
    found: list[str] = []
    for base in sys.path:  # the PyPI wheels: nvidia-cuda-nvrtc-cu12 and nvidia-cuda-nvrtc (13)
        for pat in ("nvidia/cuda_nvrtc/lib/libnvrtc.so.*", "nvidia/cu13/lib/libnvrtc.so.*"):
            found += sorted(
                p for p in glob.glob(os.path.join(base or ".", pat)) if "builtins" not in p
            )
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root:
            found += sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")))
    lib = ctypes.util.find_library("nvrtc")
    if lib:
        found.append(lib)
    return found


class Nvrtc:
    """The few NVRTC entry points a compile needs, over ctypes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lib = ctypes.CDLL(path)
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "version")
        self.version = (major.value, minor.value)

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            msg = self.lib.nvrtcGetErrorString(rc).decode(errors="replace")
            raise JobFailed(f"NVRTC {what} failed: {msg}", self.path)

    def _get(self, prog: ctypes.c_void_p, size_fn: str, get_fn: str) -> bytes:
        n = ctypes.c_size_t()
        self._check(getattr(self.lib, size_fn)(prog, ctypes.byref(n)), size_fn)
        buf = ctypes.create_string_buffer(n.value)
        self._check(getattr(self.lib, get_fn)(prog, buf), get_fn)
        return buf.raw

    def compile(self, source: str, options: list[str], arch: str) -> dict[str, bytes]:
        """{"ptx", "log"} and, for ``sm_XX``, "cubin" (for ``compute_XX`` only PTX exists).

        Runs in a thread of its own: NVRTC switches its calling thread's locale to "C"
        (``uselocale``) and leaves it so, which would turn this process's default text
        encoding into ASCII (seen with NVRTC 12.4: subprocess output then fails to decode).
        """
        with ThreadPoolExecutor(1, thread_name_prefix="nvrtc") as pool:
            return pool.submit(self._compile, source, options, arch).result()

    def _compile(self, source: str, options: list[str], arch: str) -> dict[str, bytes]:
        prog = ctypes.c_void_p()
        self._check(
            self.lib.nvrtcCreateProgram(
                ctypes.byref(prog), source.encode(), KERNEL_PATH.name.encode(), 0, None, None
            ),
            "nvrtcCreateProgram",
        )
        try:
            opts = [o.encode() for o in [*options, f"--gpu-architecture={arch}"]]
            rc = self.lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
            out = {
                "log": self._get(prog, "nvrtcGetProgramLogSize", "nvrtcGetProgramLog")
                .rstrip(b"\0")
                .strip()
            }
            if rc != 0:
                text = out["log"].decode(errors="replace")
                first = next((ln for ln in text.splitlines() if "error" in ln), text)
                raise JobFailed(
                    f"NVRTC could not compile the kernel for {arch}: {first[:300]}", KERNEL_PATH
                )
            out["ptx"] = self._get(prog, "nvrtcGetPTXSize", "nvrtcGetPTX").rstrip(b"\0")
            if is_cubin(arch):
                out["cubin"] = self._get(prog, "nvrtcGetCUBINSize", "nvrtcGetCUBIN")
            return out
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))

    def supported_archs(self) -> list[int]:
        """The SM versions this NVRTC can target (e.g. [50, ..., 90] for 12.4)."""
        n = ctypes.c_int()
        if self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)) != 0 or n.value < 1:
            return []
        arr = (ctypes.c_int * n.value)()
        self.lib.nvrtcGetSupportedArchs(arr)
        return sorted(arr)


_NVRTC: dict[str, Nvrtc | None] = {}


def nvrtc() -> Nvrtc | None:
    """The first NVRTC library that loads (``$SKYDECK_NVRTC`` if set), or None."""
    if "lib" not in _NVRTC:
        _NVRTC["lib"] = None
        for path in _nvrtc_candidates():
            try:
                _NVRTC["lib"] = Nvrtc(path)
                break
            except (OSError, AttributeError, JobFailed):
                continue
    return _NVRTC["lib"]


def nvcc() -> str | None:
    return shutil.which("nvcc")


def compilers() -> dict[str, str]:
    """What can compile here, for reports: {"nvrtc": "12.4 at PATH", "nvcc": PATH}."""
    out = {}
    lib = nvrtc()
    if lib is not None:
        out["nvrtc"] = f"{lib.version[0]}.{lib.version[1]} ({lib.path})"
    if nvcc():
        out["nvcc"] = str(nvcc())
    return out


def _nvcc_compile(arch: str) -> bytes:
    exe = nvcc()
    assert exe is not None
    with tempfile.TemporaryDirectory(prefix="skydeck-nvcc-") as d:
        out = Path(d) / "kernel.out"
        kind = "--cubin" if is_cubin(arch) else "--ptx"
        r = subprocess.run(
            [exe, kind, f"-arch={arch}", *compile_options(), "-o", str(out), str(KERNEL_PATH)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if r.returncode != 0:
            first = next((ln for ln in r.stderr.splitlines() if "error" in ln), r.stderr.strip())
            raise JobFailed(
                f"nvcc could not compile the kernel for {arch}: {first[:300]}", KERNEL_PATH
            )
        return out.read_bytes()


def compile_image(arch: str, compiler: str = "auto") -> Image:
    """Compile the kernel for ``arch`` with NVRTC (``auto`` prefers it) or nvcc."""
    arch = parse_arch(arch)
    if compiler not in COMPILERS:
        raise BadInput(f"unknown compiler {compiler!r} (choose from {', '.join(COMPILERS)})")
    t0 = time.perf_counter()
    lib = nvrtc() if compiler in ("auto", "nvrtc") else None
    if lib is not None:
        data = lib.compile(kernel_source(), compile_options(), arch)[
            "cubin" if is_cubin(arch) else "ptx"
        ]
        used = f"nvrtc {lib.version[0]}.{lib.version[1]}"
    elif compiler in ("auto", "nvcc") and nvcc():
        data, used = _nvcc_compile(arch), "nvcc"
    else:
        what = {"nvrtc": "NVRTC", "nvcc": "nvcc"}.get(compiler, "NVRTC or nvcc")
        raise JobFailed(
            f"no {what} here to compile the kernel for {arch} "
            "(pip install nvidia-cuda-nvrtc-cu12, or run `skydeck-engine kernel "
            f"build --arch {arch}` where one is and share {cache_dir()})"
        )
    img = Image(data, arch, used, time.perf_counter() - t0)
    if not img.valid():
        raise JobFailed(f"{used} produced no usable {arch} image of the kernel", KERNEL_PATH)
    return img


# ---------------------------------------------------------------------------- the cache


def _read_cached(path: Path, arch: str) -> Image | None:
    try:
        img = Image(path.read_bytes(), arch, "cache", path=path)
    except OSError:
        return None
    return img if img.valid() else None


def store(img: Image, target: Path) -> Path:
    """Write an image atomically (a reader never loads half a cubin)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, img.data)
    except OSError as err:
        raise JobFailed(f"cannot write the kernel image: {err.strerror or err}", target) from None
    img.path = target
    return target


def load_image(cc: tuple[int, int]) -> Image:
    """The image for a device of compute capability ``cc``, first found of: the cached
    cubin for its ``sm_XX``; one compiled now (and cached if the cache is writable); the
    newest cached PTX it can run (``compute_YY``, YY <= XX); PTX compiled now for the newest
    architecture NVRTC knows at or below XX (a chip newer than the compiler: the driver
    compiles that PTX for it)."""
    arch = arch_of(cc)
    sm = cc[0] * 10 + cc[1]
    d = cache_dir()
    img = _read_cached(d / image_name(arch), arch)
    if img is not None:
        return img
    try:
        img = compile_image(arch)
    except JobFailed as err:
        for ptx_arch in (f"compute_{v}" for v in range(sm, 49, -1)):
            cached = _read_cached(d / image_name(ptx_arch), ptx_arch)
            if cached is not None:
                return cached
        lib = nvrtc()
        older = [v for v in (lib.supported_archs() if lib else []) if v <= sm]
        if not older:
            raise err from None
        img = compile_image(f"compute_{older[-1]}", "nvrtc")
    with contextlib.suppress(JobFailed):  # a read-only cache (a site's shared folder)
        store(img, d / image_name(img.arch))  # then the image serves from memory
    return img
