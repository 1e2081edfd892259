"""Redis over TLS: a backup from the stack's TLS port and a restore into a TLS-only server, with the
certificate and the host name verified; a wrong CA or a certificate for another host fails with
one line naming REDIS_TLS_CA_FILE, also through the CLI."""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.redis import tls
from auction_backup_pipelines.redis.backup import backup_snapshot
from auction_backup_pipelines.redis.client import RedisBackupError, cli_env, connect, redis_tool
from auction_backup_pipelines.redis.resp import BulkConnection
from auction_backup_pipelines.redis.restore import restore_snapshot
from auction_backup_pipelines.redis.scratch import scratch_server
from auction_backup_pipelines.settings import RedisSettings
from tests.redis.test_backup_restore import fill, free_port, read_back

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STACK_TLS = ROOT / ".stack" / "tls"
CA = str(STACK_TLS / "ca.crt")
DB = 11  # the fixture's keys live in a db of their own, under a prefix of this run


def tls_port() -> int:
    port = os.environ.get("REDIS_TLS_PORT_STACK")
    if not port:
        pytest.fail("REDIS_TLS_PORT_STACK is not in the environment: run `bash stack/up.sh` and source .stack/stack.env")
    return int(port)


def plain_stack() -> RedisSettings:
    return RedisSettings.from_env()


def stack_tls(ca: str = CA, host: str = "127.0.0.1") -> RedisSettings:
    return RedisSettings(host=host, port=tls_port(), tls=True, tls_ca_file=ca, data_dir=os.environ.get("REDIS_DATA_DIR", ""))


def make_ca(folder: Path, name: str = "wrong") -> tuple[Path, Path]:
    """A throwaway CA (certificate, key) that signed nothing the servers present."""
    crt, key = folder / f"{name}-ca.crt", folder / f"{name}-ca.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name} test CA"]
        + ["-keyout", str(key), "-out", str(crt)],
        check=True,
        capture_output=True,
    )
    return crt, key


def make_server_cert(folder: Path, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    """A server certificate signed by `ca` for `san` only (e.g. DNS:elsewhere.test)."""
    crt, key, csr, ext = folder / "srv.crt", folder / "srv.key", folder / "srv.csr", folder / "srv.ext"
    subprocess.run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=elsewhere", "-keyout", str(key), "-out", str(csr)],
        check=True,
        capture_output=True,
    )
    ext.write_text(f"subjectAltName={san}\n")
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial"]
        + ["-days", "1", "-extfile", str(ext), "-out", str(crt)],
        check=True,
        capture_output=True,
    )
    return crt, key


@contextlib.contextmanager
def tls_only_server(folder: Path, cert: Path, key: Path):
    """A scratch redis-server whose TCP port speaks TLS only; yields that port."""
    for attempt in range(3):  # a free port can be taken between the probe and the bind
        port = free_port()
        args = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        args += ["--tls-ca-cert-file", CA, "--tls-auth-clients", "no"]
        try:
            with scratch_server(folder, extra_args=args):
                yield port
            return
        except RedisBackupError:
            if attempt == 2:
                raise


def tls_client(port: int, db: int = 0, host: str = "localhost") -> redis.Redis:
    """A redis-py client of the test's own, independent of the code under test."""
    return redis.Redis(host=host, port=port, db=db, protocol=2, ssl=True, ssl_ca_certs=CA, ssl_cert_reqs="required")


@pytest.fixture
def test_keys():
    """Keys of every type under a prefix of this run in db DB of the stack's Redis (written in plain)."""
    c = redis.Redis(host=plain_stack().host, port=plain_stack().port, db=DB, protocol=2)
    keys = fill(c, f"tls{os.getpid()}-{time.monotonic_ns()}:", DB)
    yield keys
    c.delete(*keys)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def assert_certificate_line(message: str) -> None:
    line = one_line(message)
    assert "TLS certificate verification failed" in line and "REDIS_TLS_CA_FILE" in line, line
    assert "Traceback" not in line


# -- settings --------------------------------------------------------------------------------------


def test_settings_refuse_tls_files_without_the_flag_and_half_a_client_certificate():
    s = RedisSettings.from_env({"REDIS_TLS": "yes", "REDIS_TLS_CA_FILE": " /etc/ca.crt "})
    assert s.tls and s.tls_ca_file == "/etc/ca.crt"
    assert not RedisSettings.from_env({}).tls
    with pytest.raises(ConfigurationError, match="REDIS_TLS is off"):
        RedisSettings.from_env({"REDIS_TLS_CA_FILE": "/etc/ca.crt"})
    with pytest.raises(ConfigurationError, match="REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together"):
        RedisSettings.from_env({"REDIS_TLS": "1", "REDIS_TLS_CERT_FILE": "/etc/c.crt"})


def test_a_missing_ca_file_is_named_before_anything_connects(tmp_path):
    with pytest.raises(ConfigurationError, match="REDIS_TLS_CA_FILE .* is not a readable PEM file"):
        connect(stack_tls(ca=str(tmp_path / "absent.crt")))
    assert tls.cli_args(RedisSettings()) == [] and tls.redis_py_options(RedisSettings()) == {}
    assert tls.cli_args(stack_tls()) == ["--tls", "--cacert", CA]


# -- backup and restore through TLS ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["network", "bgsave"])
def test_backup_from_the_tls_port_restores_into_a_tls_only_server(test_keys, repo, tmp_path, mode, on_time_day):
    expected = read_back(tls_client(tls_port(), DB, host="127.0.0.1"), test_keys)
    backup = backup_snapshot(stack_tls(), repo, on_time_day, mode=mode)  # the stack's TLS port speaks nothing else
    m = backup.metadata
    assert m["transfer"] == {"network": "redis-cli --rdb", "bgsave": "bgsave+copy"}[mode]
    assert m["content"]["dbs"][str(DB)]["types"]["stream"] >= 1

    folder = tmp_path / "target"
    folder.mkdir()
    with tls_only_server(folder, STACK_TLS / "server.crt", STACK_TLS / "server.key") as port:
        target = RedisSettings(host="localhost", port=port, tls=True, tls_ca_file=CA)  # the certificate's DNS name
        result = restore_snapshot(target, repo, backup)
        assert result.keys_verified == result.keys_restored == m["keys_total"]
        assert read_back(tls_client(port, DB), test_keys) == expected


# -- refusals ---------------------------------------------------------------------------------------------


def test_a_wrong_ca_fails_every_connection_with_one_line(repo, tmp_path, on_time_day):
    wrong = str(make_ca(tmp_path)[0])
    s = stack_tls(ca=wrong)
    with pytest.raises(RedisBackupError) as backup_error:
        backup_snapshot(s, repo, on_time_day, mode="network")
    assert_certificate_line(str(backup_error.value))
    assert repo.list() == []
    with pytest.raises(RedisBackupError) as bulk_error:  # our own RESP socket
        BulkConnection(host=s.host, port=s.port, tls=tls.context(s))
    assert_certificate_line(str(bulk_error.value))
    # redis-cli's own wording is recognised too (a network capture would report it)
    done = subprocess.run(
        [redis_tool("redis-cli"), "-h", s.host, "-p", str(s.port), *tls.cli_args(s), "ping"],
        env=cli_env(s),
        capture_output=True,
        text=True,
        timeout=30,
    )
    problem = tls.certificate_problem(done.stdout + done.stderr, f"Redis at {s.host}:{s.port}")
    assert problem is not None and "REDIS_TLS_CA_FILE" in problem


def test_a_certificate_for_another_host_is_refused(tmp_path):
    ca = make_ca(tmp_path, "other")
    cert, key = make_server_cert(tmp_path, ca, "DNS:elsewhere.test")
    folder = tmp_path / "srv"
    folder.mkdir()
    with tls_only_server(folder, cert, key) as port:
        s = RedisSettings(host="127.0.0.1", port=port, tls=True, tls_ca_file=str(ca[0]))
        with pytest.raises(RedisBackupError) as error:
            connect(s)
        assert_certificate_line(str(error.value))
        with pytest.raises(RedisBackupError) as bulk_error:
            BulkConnection(host=s.host, port=s.port, tls=tls.context(s))
        assert_certificate_line(str(bulk_error.value))
        # the same server with verification of the name only switched off answers: the name was the reason
        ctx = ssl.create_default_context(cafile=str(ca[0]))
        ctx.check_hostname = False
        BulkConnection(host=s.host, port=s.port, tls=ctx).close()


def run_cli(repo_root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(tls_port()), "REDIS_TLS": "1", **env}
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(repo_root), *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=environ, cwd=ROOT, timeout=300)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def test_cli_backs_up_through_tls_and_names_the_ca_setting_when_it_is_wrong(test_keys, tmp_path, on_time_day):
    repo_root = tmp_path / "backups"
    day = on_time_day.isoformat()
    done = run_cli(repo_root, "backup", "redis", "--date", day, "--mode", "network", REDIS_TLS_CA_FILE=CA)
    assert done.returncode == 0, done.stderr
    assert '"transfer": "redis-cli --rdb"' in done.stdout

    wrong = str(make_ca(tmp_path)[0])
    failed = run_cli(repo_root, "backup", "redis", "--date", day, "--mode", "network", REDIS_TLS_CA_FILE=wrong)
    assert failed.returncode == 1 and failed.stdout == ""
    line = one_line(failed.stderr)
    assert line.startswith("auction-backup: error: TLS certificate verification failed for Redis at 127.0.0.1:")
    assert "REDIS_TLS_CA_FILE" in line
    doctor = run_cli(repo_root, "doctor", REDIS_TLS_CA_FILE=wrong)
    assert "TLS certificate verification failed" in doctor.stdout + doctor.stderr


def test_a_plain_client_at_a_tls_port_is_told_to_set_redis_tls():
    with pytest.raises(RedisBackupError, match=r"reset the connection \(if that port serves TLS only, set REDIS_TLS=1\)"):
        connect(RedisSettings(host="127.0.0.1", port=tls_port()))


def test_tls_at_a_plain_port_fails_within_the_handshake_timeout():
    started = time.monotonic()
    with pytest.raises(RedisBackupError, match=r"did not complete a TLS handshake within 10 s: is it a plain port\?"):
        connect(RedisSettings(host=plain_stack().host, port=plain_stack().port, tls=True, tls_ca_file=CA))
    assert time.monotonic() - started < 30, "redis-py alone would wait its whole read timeout"


def test_the_native_restore_verifies_the_certificate_and_the_host(repo, tmp_path, on_time_day):
    """Into a TLS-only server, the redis-load helper connects with the CA and host name checked."""
    from auction_backup_pipelines.redis import restore_native
    from tests.redis.test_native_restore import fill_decodable

    (tmp_path / "src").mkdir()
    with scratch_server(tmp_path / "src", port=free_port()) as src:
        plain = redis.Redis(host="127.0.0.1", port=src.port, protocol=2)
        written = fill_decodable(plain, "n:", 0)
        backup = backup_snapshot(RedisSettings(host="127.0.0.1", port=src.port), repo, on_time_day)
        expected = read_back(plain, written)
    rdb = tmp_path / "dump.rdb"
    with repo.open(backup, "dump.rdb") as f:
        rdb.write_bytes(f.read())
    helper = restore_native.helper_path()
    assert helper, "redis-load is not installed: run `bash stack/install.sh`"

    folder = tmp_path / "target"
    folder.mkdir()
    with tls_only_server(folder, STACK_TLS / "server.crt", STACK_TLS / "server.key") as port:
        wrong_ca = RedisSettings(host="localhost", port=port, tls=True, tls_ca_file=str(make_ca(tmp_path)[0]))
        with pytest.raises(
            RedisBackupError, match="redis-load could not connect to Redis at .*(certificate|verify).*nothing was changed"
        ):
            restore_native.load(helper, wrong_ca, rdb, 60_000, replace=False)
        assert tls_client(port).dbsize() == 0  # nothing was written

        result = restore_snapshot(RedisSettings(host="localhost", port=port, tls=True, tls_ca_file=CA), repo, backup)
        assert result.copied_by == "redis-load" and result.digest == backup.metadata["digest"]
        assert read_back(tls_client(port), written) == expected

    ca = make_ca(tmp_path, "other")
    cert, key = make_server_cert(tmp_path, ca, "DNS:elsewhere.test")
    (tmp_path / "elsewhere").mkdir()
    with tls_only_server(tmp_path / "elsewhere", cert, key) as port:
        by_ip = RedisSettings(host="127.0.0.1", port=port, tls=True, tls_ca_file=str(ca[0]))  # signed, for another name
        with pytest.raises(
            RedisBackupError, match="could not connect to Redis at .*(certificate|verify|hostname|match).*nothing was changed"
        ):
            restore_native.load(helper, by_ip, rdb, 60_000, replace=False)
