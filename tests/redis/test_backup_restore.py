"""Redis snapshots and restores against real servers: the stack's standalone Redis under load,
and servers and 3-master clusters each test starts on free ports (own temp dirs, always stopped)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from auction_backup_pipelines.localhost import pid_alive
from auction_backup_pipelines.ops.platform_names import PlatformNames
from auction_backup_pipelines.redis.backup import backup_snapshot
from auction_backup_pipelines.redis.client import (
    RDB_FILE,
    SNAPSHOT,
    SYSTEM,
    LateCaptureRefused,
    RedisBackupError,
    RestoreRefused,
    VerificationError,
    connect,
)
from auction_backup_pipelines.redis.restore import place_rdb, restore_snapshot
from auction_backup_pipelines.redis.scratch import SCRATCH_PREFIX, scratch_server, servers_in, sweep_stale_scratch
from auction_backup_pipelines.redis.verification import verify_snapshot
from auction_backup_pipelines.repository import catalog
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.storage import IntegrityError
from auction_backup_pipelines.repository.streams import ArtifactStream
from auction_backup_pipelines.settings import RedisSettings
from stack.workload import Workload

pytestmark = pytest.mark.integration

FAST_SYNC = ["--repl-diskless-sync-delay", "0"]  # test servers only; production keeps Redis's 5 s


# -- servers -------------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def free_port(cluster_bus: bool = False) -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 50000 and (not cluster_bus or _port_free(port + 10000)):
            return port
    raise RuntimeError("no free port")


@pytest.fixture
def servers(tmp_path):
    """start(*redis-server args, name=...) -> (ScratchServer, RedisSettings); every server is stopped at the end."""
    stack = contextlib.ExitStack()

    def start(*args: str, name: str = "srv", password: str = "", cluster_bus: bool = False, data: Path | None = None):
        folder = data or tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
        folder.mkdir(exist_ok=True)
        for attempt in range(3):  # a free port can be taken between the probe and the bind
            port = free_port(cluster_bus)
            try:
                srv = stack.enter_context(scratch_server(folder, port=port, extra_args=[*FAST_SYNC, *args]))
                return srv, RedisSettings(host="127.0.0.1", port=port, password=password)
            except RedisBackupError:
                if attempt == 2:
                    raise

    with stack:
        yield start


def client(s: RedisSettings, db: int = 0) -> redis.Redis:
    return redis.Redis(host=s.host, port=s.port, db=db, password=s.password or None, protocol=2)


def start_cluster(servers, name: str) -> RedisSettings:
    nodes = [
        servers(
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
            name=f"{name}{i}",
            cluster_bus=True,
        )[1]
        for i in range(3)
    ]
    subprocess.run(
        ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes], "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    deadline = time.monotonic() + 30
    while not all(b"cluster_state:ok" in client(n).execute_command("CLUSTER", "INFO") for n in nodes):
        assert time.monotonic() < deadline, "cluster did not reach state ok"
        time.sleep(0.1)
    return nodes[0]


# -- data ----------------------------------------------------------------------------------------

BIN = bytes(range(256))


def fill(c, prefix: str, db: int = 0) -> list[bytes]:
    """Every type, binary keys and values, TTLs and a consumer group; returns the keys written."""
    p = prefix
    keys = [
        f"{p}s:{db}".encode(),
        f"{p}h:{db}".encode(),
        f"{p}l:{db}".encode(),
        f"{p}set:{db}".encode(),
        f"{p}z:{db}".encode(),
        f"{p}x:{db}".encode(),
        f"{p}ttl:{db}".encode(),
        p.encode() + b"\x00\xff" + BIN[:8],
    ]
    s, h, lst, st, z, x, ttl, binkey = keys
    c.set(s, "plain")
    c.hset(h, mapping={f"f{i}": f"v{i}" for i in range(40)} | {b"\x00bin": BIN})
    c.rpush(lst, *[f"item{i}" for i in range(30)], BIN)
    c.sadd(st, *[f"m{i}" for i in range(25)], BIN)
    c.zadd(z, {f"u{i}": i * 1.5 for i in range(30)} | {b"\xffz": -0.1})
    for i in range(20):
        c.xadd(x, {"auction": str(i), "amount": str(i * 10)})
    c.xgroup_create(x, "settlement", id="0")
    c.xreadgroup("settlement", "worker-1", {x: ">"}, count=5)
    c.set(ttl, "session", px=3_600_000)
    c.set(binkey, BIN * 4)
    return keys


def read_back(c, keys: list[bytes]) -> dict[bytes, tuple]:
    """Plain-command view of keys, independent of the code under test (TTL rounded to minutes)."""
    out = {}
    for k in keys:
        kind = c.type(k)
        value = {
            b"string": c.get,
            b"hash": c.hgetall,
            b"list": lambda key: c.lrange(key, 0, -1),
            b"set": c.smembers,
            b"zset": lambda key: c.zrange(key, 0, -1, withscores=True),
            b"stream": lambda key: (
                c.xrange(key),
                [(g["name"], g["pending"], g["last-delivered-id"]) for g in c.xinfo_groups(key)],
            ),
        }.get(kind, lambda key: None)(k)
        ttl = c.pttl(k)
        out[k] = (kind, value, round(ttl / 60000) if ttl > 0 else ttl)
    return out


@contextlib.contextmanager
def writer_thread(write_once):
    """Keep writing until the block ends; yields once the first write is done (no sleeps)."""
    stop, started = threading.Event(), threading.Event()
    count = [0]
    errors: list[BaseException] = []

    def loop():
        try:
            while not stop.is_set():
                write_once(count[0])
                count[0] += 1
                started.set()
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            started.set()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    assert started.wait(30)
    try:
        yield count
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors


def debug_digest(s: RedisSettings) -> bytes:
    return client(s).execute_command("DEBUG", "DIGEST")


# -- standalone ----------------------------------------------------------------------------------


@pytest.fixture
def stack_redis():
    s = RedisSettings.from_env()
    try:
        client(s).ping()
    except redis.ConnectionError:
        pytest.fail(f"the stack's Redis at {s.host}:{s.port} is down: run `bash stack/redis.sh up`")
    prefix = f"t{os.getpid()}-{time.monotonic_ns()}:"
    written = {db: fill(client(s, db), prefix, db) for db in (0, 3, 9)}
    yield s, written
    for db, keys in written.items():
        client(s, db).delete(*keys)


@pytest.fixture
def workload_keys():
    """Key names of this test's own for the workload's bids: Redis-only bids (no row, no event)
    written to the platform's `auction:<id>` hashes would make the shared stack's Redis disagree
    with its PostgreSQL, failing the whole-platform drill's invariants on the demo stack."""
    names = PlatformNames(key_prefix=f"t{os.getpid()}-{time.monotonic_ns()}-workload:")
    yield names
    r = client(RedisSettings.from_env())
    stale = list(r.scan_iter(match=names.key_prefix + "*", count=1000))
    if stale:
        r.delete(*stale)


@pytest.mark.parametrize("mode", ["network", "bgsave"])
def test_standalone_under_load_restores_to_exactly_the_snapshot(
    stack_redis, servers, repo, tmp_path, mode, workload_keys, on_time_day
):
    s, written = stack_redis
    expected = {db: read_back(client(s, db), keys) for db, keys in written.items()}
    saves_before = client(s).info("persistence")["rdb_saves"]
    stop, started = threading.Event(), threading.Event()
    bids = threading.Thread(
        target=Workload(seed=5, names=workload_keys).run, kwargs=dict(rate=500, stop=stop, started=started, systems=("redis",))
    )
    bids.start()
    try:
        assert started.wait(30), "the workload placed no bid"
        backup = backup_snapshot(s, repo, on_time_day, mode=mode, data_dir=os.environ.get("REDIS_DATA_DIR"))
    finally:
        stop.set()
        bids.join(30)
    m = backup.metadata
    assert m["mode"] == "rdb" and m["transfer"] == {"network": "redis-cli --rdb", "bgsave": "bgsave+copy"}[mode]
    assert m["late_capture"] is False and m["captured_at"]
    assert {"0", "3", "9"} <= set(m["content"]["dbs"])
    assert m["content"]["dbs"]["3"]["types"] == {"hash": 1, "list": 1, "set": 1, "stream": 1, "string": 3, "zset": 1}
    assert m["content"]["dbs"]["3"]["volatile"] == 1
    if mode == "bgsave":
        assert client(s).info("persistence")["rdb_saves"] > saves_before

    target, ts = servers("--enable-debug-command", "yes", name="target")
    result = restore_snapshot(ts, repo, backup)
    assert result.keys_verified == m["keys_total"] == result.keys_restored
    assert result.digest == m["digest"]
    for db, keys in written.items():  # fixture keys, read with plain commands, as they were written
        assert read_back(client(ts, db), keys) == expected[db]
    in_snapshot = client(ts).xlen(workload_keys.key("stream:bids"))
    assert client(s).xlen(workload_keys.key("stream:bids")) > in_snapshot  # the source moved on: a snapshot, not a smear

    # Independent of our digest: Redis's own DEBUG DIGEST of the restored server equals that of a
    # server started straight from the backup's RDB (placed into a stopped server's data dir).
    placed = tmp_path / "placed"
    placed.mkdir()
    place_rdb(repo, backup, placed)
    _, ps = servers("--enable-debug-command", "yes", data=placed)
    assert client(ps).dbsize() == client(ts).dbsize()
    assert debug_digest(ps) == debug_digest(ts)
    assert verify_snapshot(repo, backup).digest == m["digest"]


def test_restore_refuses_non_empty_target_without_force(servers, repo, on_time_day):
    src, ss = servers(name="src")
    keys = fill(client(ss), "r:")
    backup = backup_snapshot(ss, repo, on_time_day)
    target, ts = servers("--enable-debug-command", "yes", name="target")
    client(ts).set("precious", "keep me")
    client(ts).set(keys[0], "old value, overwritten only with force")
    client(ts, 2).set("elsewhere", "kept")
    before = debug_digest(ts)

    with pytest.raises(RestoreRefused, match="not empty.*--force"):
        restore_snapshot(ts, repo, backup)
    assert debug_digest(ts) == before

    result = restore_snapshot(ts, repo, backup, force=True)
    assert client(ts).get("precious") == b"keep me"
    assert result.keys_kept_from_before == 2
    assert read_back(client(ts), keys) == read_back(client(ss), keys)


def test_restore_that_differs_from_the_manifest_is_reported(servers, repo, on_time_day):
    _, ss = servers(name="src")
    fill(client(ss), "v:")
    backup = backup_snapshot(ss, repo, on_time_day)
    doc = json.loads((repo.backend.root / backup.manifest_key).read_bytes())
    doc["metadata"]["content"]["persistent"]["types"]["0"]["string"] += 1  # the manifest now claims one more key
    doc["metadata"]["content"]["dbs"]["0"]["types"]["string"] += 1
    # Published that way (own checksum and catalog entry agree), as a faulty capture would have:
    # the restore's own comparison must catch it.
    wrong = Backup.from_json(json.dumps({k: v for k, v in doc.items() if k != "self_sha256"}).encode())
    (repo.backend.root / backup.manifest_key).write_bytes(wrong.to_json())
    catalog.record(repo, backup.ref, wrong.to_json())
    _, ts = servers(name="target")
    with pytest.raises(VerificationError, match="db0 string: 2 keys without TTL, backup recorded 3"):
        restore_snapshot(ts, repo, repo.get(SYSTEM, SNAPSHOT, on_time_day))
    with pytest.raises(VerificationError, match="backup recorded 3"):
        verify_snapshot(repo, repo.get(SYSTEM, SNAPSHOT, on_time_day))


def test_corrupt_backup_is_refused_before_any_write(servers, repo, on_time_day):
    _, ss = servers(name="src")
    fill(client(ss), "c:")
    backup = backup_snapshot(ss, repo, on_time_day)
    stored = repo.backend.root / backup.prefix / backup.file(RDB_FILE).key
    raw = bytearray(stored.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    stored.write_bytes(bytes(raw))
    _, ts = servers(name="target")
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        restore_snapshot(ts, repo, backup)
    assert client(ts).dbsize() == 0


def test_redis_down_fails_clearly_and_stores_nothing(repo, on_time_day):
    port = free_port()
    with pytest.raises(RedisBackupError, match=f"nothing is listening at 127.0.0.1:{port}"):
        backup_snapshot(RedisSettings(host="127.0.0.1", port=port), repo, on_time_day)
    assert repo.list() == []
    assert [p for p in repo.backend.root.rglob("*") if p.is_file()] == []


def test_unresponsive_server_times_out_clearly():
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(RedisBackupError, match=f"Redis at 127.0.0.1:{port} did not answer in time"):
            connect(RedisSettings(host="127.0.0.1", port=port), timeout=0.5)
        assert time.monotonic() - started < 5  # no silent retries


def test_place_rdb_only_into_a_stopped_server_dir(servers, repo, tmp_path, on_time_day):
    _, s = servers(name="src")
    keys = fill(client(s), "p:")
    backup = backup_snapshot(s, repo, on_time_day)
    running, _ = servers(name="running")
    with pytest.raises(RestoreRefused, match="is running"):
        place_rdb(repo, backup, running.dir)
    with_aof = tmp_path / "with-aof"
    (with_aof / "appendonlydir").mkdir(parents=True)
    with pytest.raises(RestoreRefused, match="AOF"):
        place_rdb(repo, backup, with_aof)
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "dump.rdb").write_bytes(b"older snapshot")
    with pytest.raises(RestoreRefused, match="exists"):
        place_rdb(repo, backup, stopped)
    placed = place_rdb(repo, backup, stopped, force=True)
    assert Path(placed["previous_kept_as"]).read_bytes() == b"older snapshot"
    _, ps = servers(data=stopped)  # the server started on that dir loads the snapshot
    assert read_back(client(ps), keys) == read_back(client(s), keys)
    assert client(ps).dbsize() == backup.metadata["keys_total"]


def test_credentials_are_checked_and_never_exposed(servers, repo, monkeypatch, on_time_day):
    secret = "s3cret-" + os.urandom(4).hex()
    _, s = servers("--requirepass", secret, name="auth", password=secret)
    client(s).set("k", "v")
    for wrong in (dataclasses.replace(s, password="wrong"), dataclasses.replace(s, password="")):
        with pytest.raises(RedisBackupError, match=f"Redis at 127.0.0.1:{s.port} rejected the credentials for user 'default'"):
            backup_snapshot(wrong, repo, on_time_day)
    assert repo.list() == []

    launched = []
    real_popen = subprocess.Popen

    def spy(argv, *a, **kw):
        launched.append((list(argv), kw.get("env") or {}))
        return real_popen(argv, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", spy)
    backup = backup_snapshot(s, repo, on_time_day)
    cli = [(argv, env) for argv, env in launched if argv[0].endswith("redis-cli")]
    assert cli and all(secret not in " ".join(argv) and env.get("REDISCLI_AUTH") == secret for argv, env in cli)
    assert all(secret not in " ".join(argv) for argv, _ in launched)
    assert secret.encode() not in (repo.backend.root / backup.manifest_key).read_bytes()
    assert backup.metadata["keys_total"] == 1


def test_past_day_is_refused_unless_late_capture_is_allowed(servers, repo, on_time_day):
    _, s = servers(name="late")
    client(s).set("k", "v")
    past = on_time_day - dt.timedelta(days=5)
    with pytest.raises(LateCaptureRefused, match="Redis keeps no history"):
        backup_snapshot(s, repo, past)
    assert repo.list() == []
    backup = backup_snapshot(s, repo, past, allow_late_capture=True)
    assert backup.partition == past.isoformat()
    assert backup.metadata["late_capture"] is True
    assert dt.datetime.fromisoformat(backup.metadata["captured_at"].replace("Z", "+00:00")).date() > past


def test_aof_fallback_when_rdb_paths_are_refused(servers, repo, on_time_day):
    srv, s = servers(
        "--appendonly",
        "yes",
        "--auto-aof-rewrite-percentage",
        "77",
        "--rename-command",
        "SYNC",
        "",
        "--rename-command",
        "PSYNC",
        "",
        "--rename-command",
        "BGSAVE",
        "",
        name="aofonly",
    )
    keys = fill(client(s), "a:") + fill(client(s, 4), "a:", db=4)
    expected = {db: read_back(client(s, db), keys) for db in (0, 4)}
    c = client(s)
    with writer_thread(lambda i: c.hincrby("a:counter", "n", 1)):
        backup = backup_snapshot(s, repo, on_time_day, data_dir=str(srv.dir))
    m = backup.metadata
    assert m["mode"] == "aof" and m["transfer"] == "aof copy"
    assert [f.split(":")[0] for f in m["fallbacks"]] == ["bgsave", "network"]
    assert "unknown command" in m["fallbacks"][1]
    names = {f.name for f in backup.files}
    assert (
        m["aof"]["manifest"] in names
        and any(n.endswith(".base.rdb") for n in names)
        and any(n.endswith(".incr.aof") for n in names)
    )
    assert client(s).config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] == "77"  # restored

    _, ts = servers(name="target")
    result = restore_snapshot(ts, repo, backup)
    assert result.digest == m["digest"] and result.keys_verified == m["keys_total"]
    for db in (0, 4):
        assert read_back(client(ts, db), keys) == expected[db]
    counter = int(client(ts).hget("a:counter", "n"))
    assert 0 < counter <= int(client(s).hget("a:counter", "n"))


def _populated(servers, keys: int = 200_000):
    srv, s = servers("--enable-debug-command", "yes", name="big")
    client(s).execute_command("DEBUG", "POPULATE", keys, "big", 100)
    return srv, s


def test_killed_transfer_publishes_nothing(servers, repo, monkeypatch, on_time_day):
    _, s = _populated(servers)
    original = ArtifactStream.copy_from

    def kill_after_first_block(self, source, chunk=1 << 16):
        self.write(source.read(chunk))
        source.proc.kill()  # redis-cli dies mid-transfer
        return original(self, source)

    monkeypatch.setattr(ArtifactStream, "copy_from", kill_after_first_block)
    with pytest.raises(RedisBackupError, match=r"redis-cli --rdb failed \(exit -9\)"):
        backup_snapshot(s, repo, on_time_day)
    assert repo.list() == []
    assert [p for p in repo.backend.root.rglob("*") if p.is_file() and p.suffix != ".lock"] == []


@pytest.mark.parametrize("when", ["transfer", "digest"])
def test_process_killed_leaves_nothing_complete_and_the_next_run_sweeps(servers, tmp_path, monkeypatch, when, on_time_day):
    _, s = _populated(servers)
    root, scratch = tmp_path / "backups", tmp_path / "tmp"
    scratch.mkdir()
    script = textwrap.dedent(
        f"""
        import datetime as dt, os, signal
        from auction_backup_pipelines.redis import facts, rdb_facts
        from auction_backup_pipelines.redis.backup import backup_snapshot
        from auction_backup_pipelines.repository import repository, streams
        from auction_backup_pipelines.settings import RedisSettings

        def die_mid_stream(self, source, chunk=1 << 16):
            self.write(source.read(chunk))
            os.kill(os.getpid(), signal.SIGKILL)

        def die_during_digest(srv, bucket_ms=0):
            os.kill(os.getpid(), signal.SIGKILL)  # the scratch server is up and loaded

        if {when!r} == "transfer":
            streams.ArtifactStream.copy_from = die_mid_stream
        else:  # the scratch-server digest, which runs when the rdb-facts helper is missing
            rdb_facts.helper_path = lambda: None
            facts.server_facts = die_during_digest  # looked up there by snapshot_facts
        backup_snapshot(RedisSettings(host="127.0.0.1", port={s.port}), repository.Repository.local({str(root)!r}),
                        dt.date.fromisoformat({on_time_day.isoformat()!r}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=120, env={**os.environ, "TMPDIR": str(scratch)}
    )
    assert proc.returncode == -9, proc.stderr.decode()
    assert [p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock"], "the fault came before any byte was written"
    repo = Repository.local(root)
    assert repo.list() == []
    repo.gc_incomplete()
    assert [p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock"] == []

    # What `finally` could not clean after SIGKILL, the next run does: the private copy of the
    # data and, if it was running, the orphaned scratch server.
    stale = sorted(p.name for p in scratch.iterdir())
    assert stale and all(name.startswith(SCRATCH_PREFIX) for name in stale)
    orphans = servers_in(scratch)
    assert bool(orphans) == (when == "digest")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert sorted(sweep_stale_scratch()) == stale
    assert list(scratch.iterdir()) == []
    for pid in orphans:
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid) or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


# -- cluster -------------------------------------------------------------------------------------


def test_cluster_snapshot_restores_into_another_cluster(servers, repo, on_time_day):
    source = start_cluster(servers, "src")
    rc = RedisCluster(host=source.host, port=source.port, protocol=2)
    # Keys spread over all three masters; the hash tag keeps each set on one slot so `fill` works.
    keys = [k for tag in ("{a}", "{b}", "{c}", "{d}", "{e}") for k in fill(rc, f"{tag}c:")]
    expected = read_back(rc, keys)
    slots_used = {rc.keyslot(k) for k in keys}
    assert len({rc.nodes_manager.get_node_from_slot(slot).port for slot in slots_used}) == 3

    with writer_thread(lambda i: rc.set(f"live:{i}", i)) as written:
        backup = backup_snapshot(source, repo, on_time_day)
    m = backup.metadata
    assert m["mode"] == "cluster"
    nodes = m["cluster"]["nodes"]
    assert len(nodes) == 3 and sorted(n["file"] for n in nodes) == sorted(f.name for f in backup.files)
    covered = sorted(s for n in nodes for lo, hi in n["slots"] for s in range(lo, hi + 1))
    assert covered == list(range(16384))
    assert sum(n["keys"] for n in nodes) == m["keys_total"]
    assert 0 < m["keys_total"] - len(keys) <= written[0]  # some, not necessarily all, of the live writes

    target = start_cluster(servers, "dst")
    result = restore_snapshot(target, repo, backup)
    assert result.cluster_target and result.keys_verified == m["keys_total"] and result.digest == m["digest"]
    tc = RedisCluster(host=target.host, port=target.port, protocol=2)
    assert read_back(tc, keys) == expected
    per_node = [tc.get_redis_connection(n).dbsize() for n in tc.get_primaries()]
    assert sum(per_node) == m["keys_total"] and all(per_node)

    # --force over a non-empty cluster: same-named keys replaced, others kept, the backup's keys
    # read back through the cluster client and compared with the manifest.
    tc.set(keys[0], "changed")
    tc.set("{zz}not-in-backup", "kept")
    forced = restore_snapshot(target, repo, backup, force=True)
    assert forced.digest == m["digest"] and forced.keys_kept_from_before == 1
    assert read_back(tc, keys) == expected

    # A cluster backup also restores into one standalone server (db 0), e.g. to inspect it.
    _, single = servers(name="single")
    assert restore_snapshot(single, repo, backup).digest == m["digest"]


def test_cluster_target_refuses_keys_outside_db0(servers, repo, on_time_day):
    _, s = servers(name="src")
    client(s, 5).set("in-db5", "x")
    backup = backup_snapshot(s, repo, on_time_day)
    target = start_cluster(servers, "dst")
    with pytest.raises(RestoreRefused, match="only db 0"):
        restore_snapshot(target, repo, backup)
    rc = RedisCluster(host=target.host, port=target.port, protocol=2)
    assert sum(rc.get_redis_connection(n).dbsize() for n in rc.get_primaries()) == 0


def test_manifest_is_plain_json_without_secrets(servers, repo, on_time_day):
    _, s = servers(name="json")
    client(s).set("k", "v")
    backup = backup_snapshot(s, repo, on_time_day)
    doc = json.loads((repo.backend.root / backup.manifest_key).read_bytes())
    assert doc["metadata"]["content"]["digest"] == backup.metadata["digest"]
    assert doc["metadata"]["digest_method"] == "rdb-facts"  # computed while streaming, no scratch server
    assert "password" not in json.dumps(doc).lower()


# -- the Dagster asset ---------------------------------------------------------------------------


def test_asset_materializes_with_metadata_and_refuses_past_days(servers, tmp_path, on_time_day):
    from dagster import DagsterInstance, materialize

    from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, RedisResource
    from tests.dagster_defs import redis_snapshot

    _, s = servers(name="asset")
    fill(client(s), "d:")
    resources = {
        "redis": RedisResource(host=s.host, port=s.port),
        "backup_repo": BackupRepositoryResource(root=str(tmp_path / "repo")),
    }
    instance = DagsterInstance.ephemeral()
    result = materialize([redis_snapshot], partition_key=on_time_day.isoformat(), resources=resources, instance=instance)
    assert result.success
    meta = result.asset_materializations_for_node("redis__snapshot")[0].metadata
    assert meta["mode"].value == "rdb" and meta["keys_total"].value == 8 and meta["capture"].value == "on time"
    assert len(meta["content_digest"].value) == 16 and meta["redis_version"].value.startswith("7.")

    past = (on_time_day - dt.timedelta(days=3)).isoformat()
    failed = materialize([redis_snapshot], partition_key=past, resources=resources, instance=instance, raise_on_error=False)
    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    assert "Redis keeps no history" in failure.event_specific_data.error.message
    assert [b.partition for b in Repository.local(tmp_path / "repo").list()] == [on_time_day.isoformat()]
