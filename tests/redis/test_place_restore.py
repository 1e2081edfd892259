"""The fast Redis restore (redis/place_restore.py) against real servers: a snapshot placed into a
stopped server's data directory, loaded by a redis-server started on it, and compared with the
manifest; refusals and corrupt snapshots leave the directory as it was."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.redis.backup import backup_snapshot
from auction_backup_pipelines.redis.client import RestoreRefused, VerificationError
from auction_backup_pipelines.redis.place_restore import check_loaded, place_and_start, place_snapshot
from auction_backup_pipelines.redis.scratch import scratch_server
from auction_backup_pipelines.settings import RedisSettings
from tests.cli.cli_run import run_cli

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def source(tmp_path):
    """A scratch server on a loopback port holding strings, hashes, lists, sets, sorted sets and TTLs in db 0 and db 3."""
    folder = tmp_path / "source"
    folder.mkdir()
    port = _free_port()
    with scratch_server(folder, port=port, extra_args=["--repl-diskless-sync-delay", "0"]):
        r = redis.Redis(port=port, protocol=2)
        pipe = r.pipeline(transaction=False)
        for i in range(3000):
            pipe.set(f"s:{i}", f"value-{i}" * 3)
        for i in range(200):
            pipe.hset(f"h:{i}", mapping={"a": i, "b": "x" * i})
            pipe.rpush(f"l:{i}", *range(i % 7 + 1))
            pipe.sadd(f"set:{i}", *range(i % 5 + 1))
            pipe.zadd(f"z:{i}", {"m1": i, "m2": i / 3})
            pipe.set(f"ttl:{i}", i, ex=3600)
        pipe.execute()
        r3 = redis.Redis(port=port, db=3, protocol=2)
        r3.mset({f"db3:{i}": i for i in range(100)})
        yield RedisSettings(host="127.0.0.1", port=port), r, r3
        r.close()
        r3.close()


def _dir_state(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_placed_snapshot_loads_and_matches_the_manifest(source, repo, tmp_path, on_time_day):
    settings, r, r3 = source
    backup = backup_snapshot(settings, repo, on_time_day)
    target = tmp_path / "target"
    target.mkdir()
    with place_and_start(repo, backup, target, deep=True) as (placed, check, srv):
        assert Path(placed.placed) == target / "dump.rdb"
        assert placed.keys_in_file == placed.keys_recorded == backup.metadata["keys_total"] == r.dbsize() + r3.dbsize()
        assert placed.digest == backup.metadata["content"]["digest"]
        assert placed.content_check == "rdb-facts" and placed.volatile_expired == 0
        assert check.keys_loaded == check.keys_verified == placed.keys_in_file and check.deep
        where = {"unix_socket_path": str(srv.socket_path)} if srv.socket_path else {"port": srv.port}
        loaded = redis.Redis(**where, password=srv.password or None, protocol=2)  # type: ignore[arg-type]
        assert loaded.get("s:17") == r.get("s:17")
        assert loaded.hgetall("h:9") == r.hgetall("h:9")
        assert loaded.lrange("l:6", 0, -1) == r.lrange("l:6", 0, -1)
        assert loaded.zrange("z:5", 0, -1, withscores=True) == r.zrange("z:5", 0, -1, withscores=True)
        assert 3590_000 < loaded.pttl("ttl:3") <= 3600_000  # absolute expiry kept by the RDB
        assert srv.client(db=3).get("db3:42") == b"42"
        loaded.close()
    assert not [p for p in target.iterdir() if p.name.startswith(".")]  # no temp file left


def test_fast_default_proves_the_bytes_then_the_loaded_keyspace(source, repo, tmp_path, on_time_day):
    settings, r, r3 = source
    backup = backup_snapshot(settings, repo, on_time_day)
    target = tmp_path / "target"
    target.mkdir()
    with place_and_start(repo, backup, target) as (placed, check, srv):
        assert placed.content_check == "sha256" and placed.keys_in_file is None  # no second pass over the file
        assert placed.bytes == backup.file("dump.rdb").size
        assert check.keys_loaded == check.keys_verified == placed.keys_recorded == r.dbsize() + r3.dbsize()
        assert not check.deep and srv.client(db=3).dbsize() == 100


def test_a_server_holding_other_data_fails_the_load_check(source, repo, tmp_path, on_time_day):
    settings, r, _ = source
    backup = backup_snapshot(settings, repo, on_time_day)
    target = tmp_path / "target"
    target.mkdir()
    placed = place_snapshot(repo, backup, target)
    with scratch_server(target) as srv:
        srv.client().set("intruder", 1)  # a key the file does not hold
        with pytest.raises(
            VerificationError, match=r"did not load the placed RDB: db0: \d+ keys without TTL loaded, the backup recorded"
        ):
            check_loaded(srv.client(), placed, "test server")


def test_refusals_change_nothing(source, repo, tmp_path, on_time_day):
    settings, _, _ = source
    backup = backup_snapshot(settings, repo, on_time_day)
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "dump.rdb").write_bytes(b"older snapshot")
    (stopped / "redis.conf").write_text("port 0\n")
    before = _dir_state(stopped)
    with pytest.raises(RestoreRefused, match=r"exists and is not empty; nothing was changed. Pass --force"):
        place_snapshot(repo, backup, stopped)
    assert _dir_state(stopped) == before
    placed = place_snapshot(repo, backup, stopped, force=True)  # the explicit flag: old file kept aside
    assert placed.previous_kept_as and Path(placed.previous_kept_as).read_bytes() == b"older snapshot"

    running = tmp_path / "running"
    running.mkdir()
    with scratch_server(running):
        before = _dir_state(running)
        with pytest.raises(RestoreRefused, match="is running in"):
            place_snapshot(repo, backup, running, force=True)
        assert _dir_state(running) == before
    with pytest.raises(RestoreRefused, match="does not exist"):
        place_snapshot(repo, backup, tmp_path / "missing")


def test_corrupt_snapshot_fails_in_one_line_and_places_nothing(source, repo, tmp_path, on_time_day):
    settings, _, _ = source
    backup = backup_snapshot(settings, repo, on_time_day)
    target = tmp_path / "target"
    target.mkdir()
    (stored,) = [p for p in (tmp_path / "backups").rglob("dump.rdb*") if p.is_file()]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(BackupError) as err:
        place_snapshot(repo, backup, target)
    assert "\n" not in str(err.value) and str(err.value)
    assert list(target.iterdir()) == []  # neither dump.rdb nor a temp file


def test_snapshot_not_matching_its_manifest_is_not_placed(source, repo, tmp_path, on_time_day):
    settings, _, _ = source
    backup = backup_snapshot(settings, repo, on_time_day)
    # The manifest says one more string than the file holds: the file check must refuse it.
    backup.metadata["content"]["dbs"]["0"]["types"]["string"] += 1
    backup.metadata["content"]["persistent"]["types"]["0"]["string"] += 1
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(VerificationError, match="does not hold what its manifest records; nothing was placed"):
        place_snapshot(repo, backup, target, recompute=True)
    assert list(target.iterdir()) == []
    # Without the second pass the bytes are placed (they are the captured ones), and the
    # comparison after the load finds the difference.
    placed = place_snapshot(repo, backup, target)
    with scratch_server(target) as srv:
        with pytest.raises(VerificationError, match="db0: 3800 keys without TTL loaded, the backup recorded 3801"):
            check_loaded(srv.client(), placed, "test server")


def test_check_waits_for_a_server_started_later(source, repo, tmp_path, on_time_day):
    """The operator's order: place, then start the server; the check polls until it has loaded."""
    settings, _, _ = source
    backup = backup_snapshot(settings, repo, on_time_day)
    target = tmp_path / "target"
    target.mkdir()
    placed = place_snapshot(repo, backup, target)
    port = _free_port()
    r = redis.Redis(port=port, protocol=2, socket_connect_timeout=1)
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        with pytest.raises(VerificationError, match="did not finish loading within 1 s"):
            check_loaded(r, placed, f"127.0.0.1:{port}", timeout=1)
        assert time.monotonic() - started < 5
        stack.enter_context(scratch_server(target, port=port))
        check = check_loaded(r, placed, f"127.0.0.1:{port}")
        assert check.keys_loaded == placed.keys_recorded
    r.close()


def test_cli_places_then_waits_for_the_server_and_refuses_a_second_time(source, repo, tmp_path, on_time_day):
    """`restore redis --into-dir DIR --check HOST:PORT`: the operator starts the server while the CLI waits."""
    settings, r, r3 = source
    backup_snapshot(settings, repo, on_time_day)
    target = tmp_path / "target"
    target.mkdir()
    port = _free_port()
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(tmp_path / "backups"), "restore", "redis"]
    argv += ["--date", on_time_day.isoformat(), "--into-dir", str(target), "--check", f"127.0.0.1:{port}", "--allow-any-target"]
    argv += ["--load-timeout", "120"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (target / "dump.rdb").exists():  # placed: now start the server, as an operator would
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        with scratch_server(target, port=port):
            out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["loaded"]["keys_loaded"] == doc["keys_recorded"] == r.dbsize() + r3.dbsize()
    assert doc["placed"] == str(target / "dump.rdb")
    assert "restore recorded in" in err

    before = _dir_state(target)
    again = run_cli(
        "--repo", str(tmp_path / "backups"), "restore", "redis", "--date", on_time_day.isoformat(), "--into-dir", str(target)
    )
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0 and "exists and is not empty; nothing was changed" in again.stderr
    assert _dir_state(target) == before
