"""Event directories through the real CLI: production/development files, bookkeeping,
determinism across worker counts, empty hits, disk refusal, bad usage."""

from __future__ import annotations

import json
import os

import numpy as np

from engine.propagate import flags as F
from engine.propagate.event import Request, propagate
from tests.propagate.conftest import TBOX, TBOX_DETECT, cli


def test_production_event_tboolean_box_no_hits(tmp_path):
    out = tmp_path / "ev"
    r = cli("propagate", TBOX, "-o", out, "--photons", "20000", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["gs.npy", "ht.npy", "meta.json"]
    ht = np.load(out / "ht.npy")
    assert ht.shape == (0, 4, 4) and ht.dtype == np.float32  # written even when empty
    meta = json.loads((out / "meta.json").read_text())
    assert meta["photons"] == 20000 and meta["hits"] == 0 and meta["backend"] == "numpy"
    assert meta["terminal_counts"]["SA"] == 20000  # perfect absorber: everything ends SA
    assert meta["flags"]["bits"]["SD"] == 6 and meta["flags"]["bits"]["TO"] == 12
    gs = np.load(out / "gs.npy")
    assert gs.shape == (1, 6, 4) and gs.view(np.int32)[0, 0, 3] == 20000
    assert len(meta["scene"]["sha256"]) == 64


def test_development_bookkeeping(tmp_path):
    out = tmp_path / "dev"
    n = 30000
    r = cli(
        "propagate",
        TBOX_DETECT,
        "-o",
        out,
        "--photons",
        str(n),
        "--mode",
        "development",
        "--backend",
        "numpy",
        "--seed",
        "5",
    )
    assert r.returncode == 0, r.stderr
    ox, ht, seq = np.load(out / "ox.npy"), np.load(out / "ht.npy"), np.load(out / "seq.npy")
    rx = np.load(out / "rx.npy")
    assert ox.shape == (n, 4, 4) and seq.shape == (n,) and rx.shape == (n, 10, 2, 4)
    u = ox.view(np.uint32)
    assert np.array_equal(u[:, 3, 2], np.arange(n))  # every photon once, in index order
    fm, last = u[:, 3, 3], u[:, 3, 0] & 0xFFFF
    assert np.all(fm & F.TO)
    term = fm & F.TERMINAL
    n_term = np.array([bin(int(x)).count("1") for x in term])
    assert np.all(n_term <= 1)  # never two terminal flags
    ended = n_term == 1
    assert np.all(last[ended] == term[ended])  # the terminal flag is the last flag
    assert np.all((seq[~ended] >> np.uint64(4 * 9)) & np.uint64(0xF) > 0)  # rest: bounce limit
    # hits are exactly the photons carrying every hitmask bit
    sel = (fm & F.SD) == F.SD
    assert np.array_equal(ht, ox[sel])
    meta = json.loads((out / "meta.json").read_text())
    assert sum(meta["flagmask_counts"].values()) == n
    assert meta["hits"] == int(sel.sum())
    # seqhis agrees with the flagmask: OR of the nibbles' flags
    for s, f in zip(seq[:200], fm[:200], strict=True):
        ors, s = 0, int(s)
        while s:
            if s & 0xF:
                ors |= 1 << ((s & 0xF) - 1)
            s >>= 4
        assert ors == int(f)
    # record 0 is the torch start at z = -449.9 (compressed to shorts over the 450 mm extent)
    assert np.allclose(rx[:, 0, 0, 2] * 450.0 / 32767, -449.9, atol=0.05)


def test_same_result_any_worker_count_and_chunking(tmp_path):
    """Random numbers depend only on (seed, event, photon, draw): chunks/processes don't matter."""
    metas = []
    for w, chunk in ((1, 50000), (2, 7000)):
        out = tmp_path / f"w{w}"
        propagate(
            Request(
                TBOX_DETECT, out, photons=40000, seed=3, backend="numpy", workers=w, chunk=chunk
            )
        )
        metas.append(np.load(out / "ht.npy"))
    assert metas[0].shape[0] == 40000 and np.array_equal(metas[0], metas[1])
    other = tmp_path / "seed4"
    propagate(Request(TBOX_DETECT, other, photons=40000, seed=4, backend="numpy", workers=1))
    assert not np.array_equal(metas[0], np.load(other / "ht.npy"))


def test_rerun_replaces_event_and_switches_mode(tmp_path):
    out = tmp_path / "ev"
    propagate(
        Request(TBOX_DETECT, out, photons=1000, mode="development", backend="numpy", workers=1)
    )
    assert (out / "ox.npy").exists()
    propagate(
        Request(TBOX_DETECT, out, photons=1000, mode="production", backend="numpy", workers=1)
    )
    assert not (out / "ox.npy").exists()  # no stale development arrays left behind
    assert [p.name for p in tmp_path.iterdir()] == ["ev"]  # no temporaries


def test_disk_refusal_exit_2(tmp_path):
    out = tmp_path / "ev"
    r = cli("propagate", TBOX_DETECT, "-o", out, "--photons", "1e15", "--backend", "numpy")
    assert r.returncode == 2
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "not enough disk space" in line and str(out) in line
    assert not out.exists()


def test_bad_usage_exit_2(tmp_path):
    r = cli("propagate", TBOX, "-o", tmp_path / "ev", "--backend", "opencl")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = cli("propagate", TBOX, "-o", tmp_path / "ev", "--hitmask", "XX")
    assert r.returncode == 2 and "unknown flag 'XX'" in r.stderr
    r = cli("propagate", tmp_path / "missing.toml", "-o", tmp_path / "ev")
    assert r.returncode == 2 and "missing.toml" in r.stderr
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("keep me")
    r = cli("propagate", TBOX, "-o", tmp_path / "junk", "--photons", "10")
    assert r.returncode == 2 and "holds no event" in r.stderr
    assert (tmp_path / "junk" / "notes.txt").read_text() == "keep me"


def test_meta_bytes_is_the_directory_size(tmp_path):
    out = tmp_path / "ev"
    meta = propagate(Request(TBOX_DETECT, out, photons=500, backend="numpy", workers=1))
    assert meta["bytes"] == sum(p.stat().st_size for p in out.iterdir())


def test_interrupt_exit_130_leaves_nothing(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "ev"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "propagate",
            str(TBOX),
            "-o",
            str(out),
            "--photons",
            "1e9",
            "--workers",
            "2",
            "--backend",
            "numpy",
        ],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(
        p.name.startswith(".ev.tmp-") for p in tmp_path.iterdir()
    ):
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C: the whole group, workers included
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []  # no event, no temporary


def test_reserve_refusal_and_json(tmp_path):
    out = tmp_path / "ev"
    env = dict(os.environ, SKYDECK_RESERVE_BYTES=str(10**18))  # a reserve no disk can keep
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "propagate",
            str(TBOX),
            "-o",
            str(out),
            "--photons",
            "1000",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2 and "not enough disk space" in r.stderr and "reserve" in r.stderr
    assert not out.exists()
    r = cli(
        "propagate",
        TBOX_DETECT,
        "-o",
        out,
        "--photons",
        "2000",
        "--json",
        "--backend",
        "numpy",
        "--hitmask",
        "TO,BT",
    )
    meta = json.loads(r.stdout)
    assert meta["hitmask"]["label"] == "BT|TO" and meta["photons"] == 2000
    assert meta["hits"] == json.loads((out / "meta.json").read_text())["hits"] > 0


def test_gensteps_from_a_delivery(tmp_path):
    first = tmp_path / "first"
    propagate(Request(TBOX_DETECT, first, photons=3000, backend="numpy", workers=1))
    gs = np.load(first / "gs.npy")
    two = np.concatenate([gs, gs])
    two.view(np.int32)[1, 0, 3] = 1000
    two[1, 3, 3] = 450.0  # the second genstep at another wavelength
    path = tmp_path / "gensteps.npy"
    np.save(path, two)
    out = tmp_path / "ev"
    r = cli("propagate", TBOX_DETECT, "-o", out, "--gensteps", path, "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    ht = np.load(out / "ht.npy")
    assert len(ht) == 4000 and np.array_equal(np.load(out / "gs.npy"), two)
    assert np.all(ht[:3000, 2, 3] == 380.0) and np.all(ht[3000:, 2, 3] == 450.0)
    assert np.array_equal(ht[:3000], np.load(first / "ht.npy"))  # same photons, same draws
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 6, 4), np.float64))
    r = cli("propagate", TBOX_DETECT, "-o", tmp_path / "ev2", "--gensteps", bad)
    assert r.returncode == 2 and "(G,6,4) float32" in r.stderr and str(bad) in r.stderr


def test_zero_photons_and_progress_callback(tmp_path):
    seen: list[int] = []
    meta = propagate(
        Request(TBOX_DETECT, tmp_path / "zero", photons=0, backend="numpy"), advance=seen.append
    )
    assert meta["photons"] == 0 and meta["hits"] == 0 and seen == []
    assert np.load(tmp_path / "zero" / "ht.npy").shape == (0, 4, 4)
    started: list[int] = []
    meta = propagate(
        Request(
            TBOX_DETECT, tmp_path / "ev", photons=30_000, backend="numpy", workers=2, chunk=4096
        ),
        advance=seen.append,
        on_start=started.append,
    )
    assert started == [30_000] and sum(seen) == 30_000 and max(seen) == 4096


def test_development_with_zero_photons(tmp_path):
    meta = propagate(Request(TBOX, tmp_path / "ev", photons=0, mode="development", backend="numpy"))
    assert meta["photons"] == 0
    assert np.load(tmp_path / "ev" / "ox.npy").shape == (0, 4, 4)
    assert np.load(tmp_path / "ev" / "rx.npy").shape == (0, 10, 2, 4)
    assert np.load(tmp_path / "ev" / "seq.npy").shape == (0,)


def test_hits_in_photon_order_across_the_32_bit_boundary():
    """Photon indices beyond 2**32: the stored low 32 bits wrap, the hit order must not."""
    from engine.propagate.numpy_backend import propagate_chunk
    from engine.propagate.params import Params
    from engine.propagate.scene import gensteps, load_scene

    scene = load_scene(TBOX_DETECT)
    start = 2**32 - 700
    gs = gensteps(scene.source, 2**32 + 1000)
    r = propagate_chunk(scene.arrays(), gs, start, 1500, Params(1, 0, 9, F.SD, False))
    low = r.hits.view(np.uint32)[:, 3, 2]
    assert len(low) == 1500
    assert np.array_equal(low, ((np.arange(1500) + start) & 0xFFFFFFFF).astype(np.uint32))
