"""Real mount: cooling through the daemon, live stats, Prometheus output, kill -9 in the middle of cooling."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from thermofs.fs.meta import MetaStore

if TYPE_CHECKING:
    from tests.conftest import Run
    from tests.mount.conftest import Mount, StatsJson

THERMOFS = [sys.executable, "-m", "thermofs"]


def copy_corpora(corpora: Path, dst: Path) -> None:
    subprocess.run(["cp", "-a", str(corpora), str(dst)], check=True)


def same_tree(a: Path, b: Path) -> None:
    r = subprocess.run(["diff", "-r", str(a), str(b)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[:2000] + r.stderr[:2000]


def test_cool_now_through_the_daemon(make_mount: Callable[..., Mount], run: Run, stats_json: StatsJson,
                                     corpora: Path) -> None:
    m = make_mount(options="nocool")
    copy_corpora(corpora, m.mountpoint)
    before = stats_json(m.mountpoint)
    assert before["mounted"] and before["live"]["write_ops"] > 0
    assert before["cold_chunks"] == 0 and before["hot_chunks"] == before["chunks"] > 0
    r = run("cool", m.mountpoint, "--now", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    after = stats_json(m.store)  # the store path of a mounted volume works too
    assert report["cooled"] == before["chunks"] == after["cold_chunks"] and after["hot_chunks"] == 0
    assert after["stored_bytes"] < before["stored_bytes"]
    assert after["cooled_chunks"] == report["cooled"]
    assert after["live"]["cooler"]["passes"] == 1
    same_tree(corpora, m.mountpoint / "corpora")
    m.remount()
    same_tree(corpora, m.mountpoint / "corpora")
    assert stats_json(m.mountpoint)["cold_chunks"] == after["cold_chunks"]


def test_stats_prometheus_and_table(make_mount: Callable[..., Mount], run: Run) -> None:
    m = make_mount()
    (m.mountpoint / "t.txt").write_bytes(b"hello thermofs\n" * 20000)
    (m.mountpoint / "t.txt").read_bytes()
    r = run("stats", m.mountpoint, "--prometheus")
    assert r.returncode == 0, r.stderr
    samples = {}
    for line in r.stdout.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples["thermofs_logical_bytes"] == 15 * 20000
    assert samples['thermofs_chunks{tier="hot"}'] == 5
    assert samples["thermofs_written_bytes_total"] >= 15 * 20000
    assert samples["thermofs_mounted"] == 1
    assert all(line.startswith(("# HELP thermofs_", "# TYPE thermofs_", "thermofs_"))
               for line in r.stdout.splitlines())
    r = run("stats", m.mountpoint)
    assert r.returncode == 0 and "cooler" in r.stdout and "hit rate" in r.stdout
    r = run("stats", m.mountpoint, m.mountpoint / "t.txt")
    assert r.returncode == 0 and "t.txt" in r.stdout and "zstd 5" in r.stdout


def test_background_cooler_cools_idle_data(make_mount: Callable[..., Mount], stats_json: StatsJson,
                                           corpora: Path) -> None:
    m = make_mount(options="cold_age=1s,cool_interval=1s")
    copy_corpora(corpora, m.mountpoint)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        s = stats_json(m.mountpoint)
        if s["hot_chunks"] == 0:
            break
        time.sleep(0.5)
    assert s["hot_chunks"] == 0 and s["cold_chunks"] == s["chunks"] > 0
    same_tree(corpora, m.mountpoint / "corpora")


def _text(rnd: random.Random, n: int) -> bytes:
    words = [bytes(rnd.choice(b"etaoinshrdlu") for _ in range(rnd.randint(2, 9))) for _ in range(2000)]
    return b" ".join(rnd.choice(words) for _ in range(n // 5))[:n]


def test_kill_9_during_cooling_loses_nothing(make_mount: Callable[..., Mount], run: Run, stats_json: StatsJson) -> None:
    m = make_mount(options="nocool")
    rnd = random.Random(7)
    files = {f"f{i}": _text(rnd, 2_000_000 + i) for i in range(12)}
    for name, data in files.items():
        (m.mountpoint / name).write_bytes(data)
    total = stats_json(m.mountpoint)["chunks"]
    cool = subprocess.Popen([*THERMOFS, "cool", str(m.mountpoint), "--now", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        meta = MetaStore(m.store / "meta.lmdb", readonly=True)
        with meta.read() as t:
            cold = t.counter("cold_chunks")
        meta.close()
        if cold > 0:
            break
        time.sleep(0.05)
    m.kill()
    out, err = cool.communicate(timeout=60)
    assert 0 < cold < total, "kill should land in the middle of the pass"
    assert cool.returncode != 0 and "daemon" in err, (out, err)
    m.start()
    for name, data in files.items():
        assert (m.mountpoint / name).read_bytes() == data, name
    m.stop()
    # garbage accounted: the frames the cooler appended but never committed are in the records
    r = run("fsck", m.store, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not json.loads(r.stdout)["problems"], r.stdout
    m.start()
    s = stats_json(m.mountpoint)
    assert s["chunks"] == total and s["cold_chunks"] + s["hot_chunks"] == total
    assert 0 < s["cold_chunks"] < total
    r = run("cool", m.mountpoint, "--now", "--json")
    assert r.returncode == 0, r.stderr
    assert stats_json(m.mountpoint)["cold_chunks"] == total
    m.remount()
    for name, data in files.items():
        assert (m.mountpoint / name).read_bytes() == data, name


def test_train_dictionaries_mounted_and_offline(make_mount: Callable[..., Mount], run: Run, corpora: Path) -> None:
    m = make_mount(options="nocool")
    copy_corpora(corpora, m.mountpoint)
    r = run("train", m.mountpoint, "--no-model", "--json")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["samples"] > 0 and first["dictionaries"], first
    m.stop()
    r = run("train", m.store, "--no-model", "--json")
    assert r.returncode == 0, r.stderr
    second = json.loads(r.stdout)
    # new ids: the first dictionaries stay for the frames that name them
    assert min(d["id"] for d in second["dictionaries"]) > max(d["id"] for d in first["dictionaries"])
    r = run("train", m.store / "nope")
    assert r.returncode != 0 and "no such store" in r.stderr
    m.start()
    same_tree(corpora, m.mountpoint / "corpora")


def _learned_params(store: Path, inos: list[int]) -> set[int]:
    meta = MetaStore(store / "meta.lmdb", readonly=True)
    try:
        with meta.read() as t:
            return {e.param for ino in inos for _i, e in t.chunks_of(ino) if e.codec_id == 4}
    finally:
        meta.close()


def test_cold_codec_learned_and_a_trained_model(make_mount: Callable[..., Mount], run: Run, stats_json: StatsJson,
                                                corpora: Path) -> None:
    """--cold-codec learned: cool --now stores cold chunks with the learned codec (the shipped model,
    id 0); after `train` (models per kind, kept where they code held-out samples smaller: two copies
    of the data make sure they do), new cold frames name the volume's models and the old ones still
    decode with the model they name, across a remount."""
    m = make_mount(options="nocool", cold_codec="learned")
    src = corpora / "canterbury"
    subprocess.run(["cp", "-a", str(src), str(m.mountpoint / "a")], check=True)
    subprocess.run(["cp", "-a", str(src), str(m.mountpoint / "a2")], check=True)
    r = run("cool", m.mountpoint, "--now", "--json")
    assert r.returncode == 0, r.stderr
    s = stats_json(m.mountpoint)
    assert s["codecs"]["learned"]["chunks"] > 0 and s["hot_chunks"] == 0
    assert s["codecs"]["learned"]["stored_bytes"] < 0.3 * s["codecs"]["learned"]["raw_bytes"]
    first = [p.stat().st_ino for p in (m.mountpoint / "a").iterdir()]
    r = run("train", m.mountpoint, "--budget", "15s", "--json")
    assert r.returncode == 0, r.stderr
    trained = json.loads(r.stdout)["models"]
    assert trained and {d["id"] for d in trained} <= {1, 2}
    subprocess.run(["cp", "-a", str(src), str(m.mountpoint / "b")], check=True)
    assert run("cool", m.mountpoint, "--now").returncode == 0
    second = [p.stat().st_ino for p in (m.mountpoint / "b").iterdir()]
    m.remount()
    assert _learned_params(m.store, first) == {0}
    assert _learned_params(m.store, second) <= {0} | {d["id"] for d in trained}
    assert _learned_params(m.store, second) & {d["id"] for d in trained}
    same_tree(src, m.mountpoint / "a")
    same_tree(src, m.mountpoint / "b")
