"""`skydeck-engine kernel build [--arch sm_90] [-o FILE|DIR]`: precompile the GPU kernel.

Why: GPU nodes should need the driver only. A site runs this once where NVRTC (the
``nvidia-cuda-nvrtc-cu12`` wheel) or nvcc is, into the kernel cache that both GPU backends
read (``$SKYDECK_KERNEL_CACHE``, default ``~/.cache/skydeck/kernels``) or into a shared
folder that the nodes' ``SKYDECK_KERNEL_CACHE`` names. ``sm_XX`` gives a cubin for that
chip, ``compute_XX`` PTX that the driver compiles for that chip and newer ones.

Its machinery is imported in ``run_build()``, not here: ``--help`` must stay light
(test_startup).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli import SUMMARY
from engine.propagate.options import COMPILERS, DEFAULT_ARCHS


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("kernel", parents=[common], help=SUMMARY["kernel"])
    ksub = p.add_subparsers(dest="kernel_command", metavar="ACTION", required=True)
    b = ksub.add_parser(
        "build",
        parents=[common],
        help="compile the kernel (NVRTC, else nvcc) into the kernel cache or a file",
    )
    b.add_argument(
        "--arch",
        action="append",
        default=None,
        help=f"sm_XX (cubin) or compute_XX (PTX); repeatable (default: {' '.join(DEFAULT_ARCHS)})",
    )
    b.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="a FILE (one --arch) or an existing DIR (cache names); default: the kernel cache",
    )
    b.add_argument(
        "--compiler", choices=COMPILERS, default="auto", help="auto: NVRTC if it loads, else nvcc"
    )
    b.add_argument("--json", action="store_true", help="print one JSON object per image")
    b.set_defaults(func=run_build)


def _targets(archs: list[str], out: Path | None) -> list[tuple[str, Path]]:
    """(arch, path) per image; every problem is found before anything compiles."""
    from engine.core.errors import BadInput
    from engine.propagate import kernel

    if out is not None and out.is_dir():
        return [(a, out / kernel.image_name(a)) for a in archs]
    if out is not None:
        if len(archs) > 1:
            raise BadInput(
                f"-o names one file but {len(archs)} architectures were asked for "
                "(give a directory, or one --arch)",
                out,
            )
        if not out.parent.is_dir():
            raise BadInput("the output's directory does not exist", out.parent)
        return [(archs[0], out)]
    return [(a, kernel.cache_dir() / kernel.image_name(a)) for a in archs]


def run_build(args: argparse.Namespace) -> int:
    import json

    from engine.propagate import kernel

    archs = list(dict.fromkeys(kernel.parse_arch(a) for a in (args.arch or DEFAULT_ARCHS)))
    for arch, path in _targets(archs, args.output):
        img = kernel.compile_image(arch, args.compiler)
        kernel.store(img, path)
        if args.json:
            print(
                json.dumps(
                    {
                        "arch": arch,
                        "path": str(path),
                        "bytes": len(img.data),
                        "compiler": img.compiler,
                        "seconds": round(img.seconds, 3),
                        "key": kernel.kernel_key(),
                    },
                    sort_keys=True,
                )
            )
        else:
            print(f"{arch}: {path} ({len(img.data):,} B, {img.compiler}, {img.seconds:.1f} s)")
    return 0
