"""The kernel compiles without a GPU, in CI, with NVRTC from the PyPI wheel (the ``test``
extra's nvidia-cuda-nvrtc-cu12) and the backends' exact options, for sm_80 and sm_90; the
image cache is keyed by kernel hash and architecture; `skydeck-engine kernel build`
precompiles it for a site. nvcc, where present, compiles the same source and options."""

from __future__ import annotations

import json
import os
import platform
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import BadInput, JobFailed
from engine.propagate import kernel
from engine.propagate.options import DEFAULT_ARCHS
from tests.conftest import engine_env, run_engine
from tests.props import total

ARCHS = ("sm_80", "sm_90")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "kcache"
    monkeypatch.setenv("SKYDECK_KERNEL_CACHE", str(d))
    return d


def nvrtc_or_fail() -> kernel.Nvrtc:
    lib = kernel.nvrtc()
    if lib is None:
        if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
            pytest.skip("no NVRTC wheel for this platform")
        pytest.fail("NVRTC not found: the test extra installs nvidia-cuda-nvrtc-cu12")
    return lib


def elf_sm(cubin: bytes) -> int:
    """The SM version a CUDA ELF is built for (e_flags: low byte, or the next one in
    the newer ABI)."""
    flags = int.from_bytes(cubin[48:52], "little")
    return flags & 0xFF if cubin[8] < 8 else (flags >> 8) & 0xFF


@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_compiles_the_kernel(arch):
    lib = nvrtc_or_fail()
    out = lib.compile(kernel.kernel_source(), kernel.compile_options(), arch)
    assert b"warning" not in out["log"].lower(), out["log"]
    text = out["ptx"].decode()
    assert ".visible .entry propagate(" in text  # extern "C": the name both backends look up
    assert f".target {arch}" in text
    img = kernel.Image(out["cubin"], arch, "nvrtc")
    assert img.valid()
    assert img.data[:4] == b"\x7fELF" and int.from_bytes(img.data[18:20], "little") == 190
    assert elf_sm(img.data) == int(arch[3:])
    assert b"propagate\0" in img.data  # the entry's symbol


def test_nvcc_compiles_the_same_source_and_options():
    if kernel.nvcc() is None:
        pytest.skip("nvcc not on PATH")
    img = kernel.compile_image("sm_90", "nvcc")
    assert img.valid() and elf_sm(img.data) == 90 and b"propagate\0" in img.data
    ptx = kernel.compile_image("compute_80", "nvcc").data.decode()
    assert ".entry propagate(" in ptx and ".target sm_80" in ptx


def test_cache_is_keyed_by_kernel_hash_and_arch(cache, monkeypatch):
    nvrtc_or_fail()
    a = kernel.load_image((9, 0))
    assert a.path == cache / kernel.image_name("sm_90") and a.path.read_bytes() == a.data
    assert kernel.kernel_key() in a.path.name
    calls = []
    real = kernel.compile_image
    monkeypatch.setattr(kernel, "compile_image", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert kernel.load_image((9, 0)).data == a.data and calls == []  # from the cache
    kernel.load_image((8, 0))
    assert calls == [("sm_80",)]
    # a changed option (or source) is another kernel: a new key, a new image
    opts = kernel.compile_options()
    monkeypatch.setattr(kernel, "compile_options", lambda: [*opts, "-DEXTRA=1"])
    assert kernel.image_name("sm_90") != a.path.name
    kernel.load_image((9, 0))
    assert calls[-1] == ("sm_90",) and len(list(cache.iterdir())) == 3


def test_a_damaged_cache_file_is_rebuilt(cache):
    nvrtc_or_fail()
    cache.mkdir()
    bad = cache / kernel.image_name("sm_90")
    bad.write_bytes(b"\x7fELF truncated")
    img = kernel.load_image((9, 0))
    assert img.valid() and bad.read_bytes() == img.data


def test_without_a_compiler_the_newest_cached_ptx_serves(cache, monkeypatch):
    nvrtc_or_fail()
    cache.mkdir()
    for arch in ("compute_80", "compute_90"):
        kernel.store(kernel.compile_image(arch), cache / kernel.image_name(arch))
    monkeypatch.setattr(kernel, "nvrtc", lambda: None)
    monkeypatch.setattr(kernel, "nvcc", lambda: None)
    img = kernel.load_image((9, 0))
    assert img.arch == "compute_90" and img.valid()
    assert kernel.load_image((8, 6)).arch == "compute_80"
    with pytest.raises(JobFailed, match=r"no NVRTC or nvcc here .* kernel build --arch sm_75"):
        kernel.load_image((7, 5))


def test_a_read_only_cache_still_loads(tmp_path, monkeypatch):
    nvrtc_or_fail()
    if os.geteuid() == 0:  # root writes anywhere: point the cache below a file instead
        (tmp_path / "file").write_text("")
        monkeypatch.setenv("SKYDECK_KERNEL_CACHE", str(tmp_path / "file" / "kcache"))
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        monkeypatch.setenv("SKYDECK_KERNEL_CACHE", str(tmp_path / "ro"))
    img = kernel.load_image((9, 0))
    assert img.valid() and img.path is None


@pytest.mark.parametrize(
    "text,want",
    [
        ("sm_90", "sm_90"),
        ("90", "sm_90"),
        ("9.0", "sm_90"),
        ("SM80", "sm_80"),
        ("compute_80", "compute_80"),
        (" sm_90a ", "sm_90a"),
        ("sm_100", "sm_100"),
    ],
)
def test_parse_arch(text, want):
    assert kernel.parse_arch(text) == want


@given(st.text(max_size=12))
def test_parse_arch_is_total(text):
    r = total(kernel.parse_arch, text)
    assert isinstance(r, BadInput) or r.startswith(("sm_", "compute_"))


def test_kernel_build_cli(tmp_path):
    nvrtc_or_fail()
    env = engine_env(SKYDECK_KERNEL_CACHE=str(tmp_path / "kcache"))
    r = run_engine("kernel", "build", "--json", env=env, check=True)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["arch"] for row in rows] == list(DEFAULT_ARCHS)
    for row in rows:
        assert row["path"] == str(
            tmp_path / "kcache" / f"propagate-{row['key']}-{row['arch']}.cubin"
        )
        assert os.path.getsize(row["path"]) == row["bytes"] > 0
    out = tmp_path / "site.cubin"
    r = run_engine("kernel", "build", "--arch", "sm_90", "-o", out, env=env, check=True)
    assert r.stdout.startswith(f"sm_90: {out} (") and out.read_bytes()[:4] == b"\x7fELF"
    site = tmp_path / "site"
    site.mkdir()
    run_engine("kernel", "build", "--arch", "compute_90", "-o", site, env=env, check=True)
    (ptx,) = site.iterdir()
    assert ptx.name.endswith("-compute_90.ptx") and b".entry propagate" in ptx.read_bytes()


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--arch", "sm_9x"], "--arch: 'sm_9x' is not a CUDA architecture"),
        (
            ["--arch", "sm_80", "--arch", "sm_90", "-o", "{tmp}/one.cubin"],
            "-o names one file but 2",
        ),
        (
            ["--arch", "sm_80", "-o", "{tmp}/missing/one.cubin"],
            "the output's directory does not exist",
        ),
    ],
)
def test_kernel_build_refuses_bad_usage_in_one_line(tmp_path, args, msg):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = run_engine(
        "kernel", "build", *args, env=engine_env(SKYDECK_KERNEL_CACHE=str(tmp_path / "kcache"))
    )
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and msg in r.stderr, r.stderr
    assert not (tmp_path / "kcache").exists() and not (tmp_path / "one.cubin").exists()


def test_compiling_leaves_the_process_text_encoding_alone():
    """NVRTC sets its thread's locale to "C" and keeps it: compiled on the caller's thread,
    every later subprocess's output would decode as ASCII (a `hits` table's box drawing
    then raised UnicodeDecodeError in the same process)."""
    import locale

    nvrtc_or_fail()
    before = locale.getpreferredencoding(False)
    kernel.compile_image("sm_90")
    assert locale.getpreferredencoding(False) == before


def test_a_chip_newer_than_nvrtc_gets_ptx_for_the_newest_arch_it_knows(cache):
    lib = nvrtc_or_fail()
    newest = lib.supported_archs()[-1]
    assert newest >= 90 and 80 in lib.supported_archs()
    future = (newest // 10 + 3, 0)  # e.g. sm_120 for NVRTC 12.4, whose newest is sm_90
    img = kernel.load_image(future)
    assert img.arch == f"compute_{newest}" and img.valid()
    assert (cache / kernel.image_name(f"compute_{newest}")).read_bytes() == img.data
