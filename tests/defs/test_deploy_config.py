"""docker-compose.yml and the instance configs agree with the settings the code reads.

No container engine runs here, so the compose file is checked for consistency instead of
being started: every service the architecture names exists, volumes are declared, and the
environment handed to the code location matches the settings package's defaults and the services."""

from __future__ import annotations

import ipaddress
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from dagster import DagsterInstance

from auction_backup_pipelines.settings import (
    AUCTION_TOPICS,
    ENVIRONMENT_VARIABLES,
    SECRET_VARIABLES,
    KafkaSettings,
    PostgresSettings,
    RedisSettings,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_of_the_architecture_exist(compose):
    assert {"postgres", "redis", "kafka", "dagster_storage", "code_location", "webserver", "daemon"} <= set(compose["services"])


def test_every_mounted_named_volume_is_declared(compose):
    declared = set(compose["volumes"])
    for name, svc in compose["services"].items():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith(("/", ".")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_postgres_archives_wal_into_its_own_volume(compose):
    pg = compose["services"]["postgres"]
    assert "wal_level=replica" in pg["command"] and "archive_mode=on" in pg["command"]
    assert "/wal_archive/%f" in pg["command"]
    assert "wal_archive:/wal_archive" in pg["volumes"]


def test_postgres_serves_tls_with_the_mounted_certificate_and_key(compose):
    # As the local stack's server (stack/postgres.sh): ssl=on, with files the operator provides.
    pg = compose["services"]["postgres"]
    settings = dict(re.findall(r"-c (ssl\w*)=(\S+)", pg["command"]))
    assert settings["ssl"] == "on" and settings["ssl_min_protocol_version"] == "TLSv1.2"
    [mount] = [m for m in pg["volumes"] if m.startswith("./deploy/postgres-tls:")]
    source, target, mode = mount.split(":")
    assert mode == "ro"
    assert settings["ssl_cert_file"] == f"{target}/server.crt" and settings["ssl_key_file"] == f"{target}/server.key"
    # The folder is in the project, and git keeps a private key put there out of commits.
    folder = ROOT / source
    assert (folder / ".gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]


def test_code_location_environment_matches_settings_and_services(compose):
    services = compose["services"]
    env = services["code_location"]["environment"]
    defaults_pg, defaults_redis = PostgresSettings(), RedisSettings()
    assert env["POSTGRES_DB"] == defaults_pg.dbname == services["postgres"]["environment"]["POSTGRES_DB"]
    assert env["POSTGRES_USER"] == defaults_pg.user == services["postgres"]["environment"]["POSTGRES_USER"]
    assert env["POSTGRES_HOST"] in services and int(env["POSTGRES_PORT"]) == defaults_pg.port
    assert int(env["REDIS_PORT"]) == defaults_redis.port
    assert services["redis"]["command"][services["redis"]["command"].index("--port") + 1] == env["REDIS_PORT"]
    kafka_host, kafka_port = env["KAFKA_BOOTSTRAP_SERVERS"].split(":")
    assert kafka_host in services
    assert services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{kafka_host}:{kafka_port}"
    assert kafka_port == KafkaSettings().bootstrap_servers.split(":")[1]
    assert (
        env["DAGSTER_PG_HOST"] in services and env["DAGSTER_PG_DB"] == services["dagster_storage"]["environment"]["POSTGRES_DB"]
    )
    assert "auction_backups:" + env["BACKUP_ROOT"] in services["code_location"]["volumes"]
    # Secrets are never written in the file, only required from the environment.
    assert env["POSTGRES_PASSWORD"].startswith("${") and env["DAGSTER_PG_PASSWORD"].startswith("${")
    assert len(AUCTION_TOPICS) == 4


DAGSTER_STORAGE_VARIABLES = {f"DAGSTER_PG_{part}" for part in ("HOST", "PORT", "DB", "USER", "PASSWORD")}
# Written in the compose file because the compose network decides them (service names, ports, the volume).
COMPOSE_WIRING = {
    *("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER", "REDIS_HOST", "REDIS_PORT"),
    *("KAFKA_BOOTSTRAP_SERVERS", "BACKUP_ROOT", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USER"),
}
# ${NAME}, ${NAME:-default}, ${NAME:?message}: the name, and what follows it.
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def instance_reads(node: object) -> set[str]:
    """Every `env: NAME` an instance config reads for itself (its storage's DAGSTER_PG_*)."""
    if isinstance(node, dict):
        own = {node["env"]} if set(node) == {"env"} else set()
        return own.union(*(instance_reads(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(instance_reads(value) for value in node))
    return set()


def test_run_containers_and_services_get_every_variable_the_code_reads(compose):
    # A variable the code reads but the deployment does not hand over is silently unset in
    # production: run containers wrote backups in plaintext that way (no BACKUP_ENCRYPTION_KEYS).
    deploy = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert deploy["run_launcher"]["class"] == "DockerRunLauncher"
    assert instance_reads(deploy) == DAGSTER_STORAGE_VARIABLES
    needed = set(ENVIRONMENT_VARIABLES) | DAGSTER_STORAGE_VARIABLES
    forwarded = deploy["run_launcher"]["config"]["env_vars"]
    assert len(forwarded) == len(set(forwarded)), "a name is forwarded twice"
    assert [item for item in forwarded if "=" in item] == [], "names only: NAME=value writes a value into the file"
    assert sorted(needed - set(forwarded)) == [], "the run launcher does not forward these"
    assert sorted(set(forwarded) - needed) == [], "forwarded, but nothing reads them"
    services = compose["services"]
    env = services["code_location"]["environment"]
    assert sorted(needed - set(env)) == [], "x-backup-env lacks these"
    for name in ("webserver", "daemon"):  # the daemon's environment is what the launcher forwards
        assert services[name]["environment"] == env, f"{name} does not use x-backup-env"


def test_backup_environment_values_come_from_the_env_file_and_secrets_are_never_written(compose):
    env = compose["services"]["code_location"]["environment"]
    secrets = SECRET_VARIABLES | {"DAGSTER_PG_PASSWORD"}
    for name, value in env.items():
        reference = REFERENCE.fullmatch(str(value))
        if name in secrets:
            # Its own variable, required or blank when unset; never a default, which would be written here.
            assert reference and reference.group(1) == name and reference.group(2) in (None, "?", ":?"), (name, value)
        elif reference:
            # Blank when unset (`${NAME:-}`, or `${NAME}` for names that look secret): the settings package's
            # default applies, not a second default kept here.
            blank_or_required = reference.group(3) in (None, "") or reference.group(2) in ("?", ":?")
            assert reference.group(1) == name and blank_or_required, (name, value)
        else:  # the compose network's own wiring (service names, ports, the backups volume)
            assert "$" not in str(value), (name, value)
    literal = {name for name, value in env.items() if not REFERENCE.fullmatch(str(value))}
    assert literal <= COMPOSE_WIRING, sorted(literal - COMPOSE_WIRING)


def test_local_instance_queues_runs_with_one_run_per_system(tmp_path):
    shutil.copy(ROOT / "instance" / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        config = instance.get_concurrency_config()
        [limit] = config.run_queue_config.tag_concurrency_limits
        assert (limit["key"], limit["limit"], limit["value"]) == ("auction_backup/system", 1, {"applyLimitPerUniqueValue": True})
        assert config.pool_config.default_pool_limit == 1
    finally:
        instance.dispose()


# The Dagster UI has no login of its own and can launch restores to a target its user names:
# only the signing-in proxy in front of it may be published, and only on loopback.
UI_PROXY = "ui_proxy"
# ${NAME}, ${NAME:?message} or ${NAME?message}: required from the environment, nothing written here.
REQUIRED_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}")
DEFAULTED_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|KEY")


def published_host_ip(port: str | int | dict) -> str | None:
    """The host address a `ports` entry binds to; None when it binds every interface."""
    if isinstance(port, dict):
        return port.get("host_ip")
    # Split on the colons outside ${...} and [...]: a variable's default and IPv6 have their own.
    parts, depth, current = [], 0, ""
    for char in str(port):
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        elif char == ":" and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return parts[0] if len(parts) == 3 else None


def binds_loopback(host_ip: str | None) -> bool:
    """Whether a published port's host address (or a variable's default for it) is loopback."""
    if host_ip is None:
        return False
    defaulted = DEFAULTED_VARIABLE.fullmatch(host_ip)
    address = defaulted.group(1) if defaulted else host_ip
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def environment_of(service: dict) -> dict[str, str]:
    """A service's environment, from either of compose's two spellings (mapping or KEY=VALUE list)."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {name: str(value) for name, value in env.items()}


def test_port_parsing_tells_loopback_from_every_interface():
    # The old webserver entry, and the spellings that also bind every interface, are refused.
    for everywhere in ("3000:3000", "3000", 3000, "0.0.0.0:3000:3000", "${UI_BIND}:3000:4180", "${UI_PORT:-3000}:4180"):
        assert not binds_loopback(published_host_ip(everywhere)), everywhere
    loopback = ("127.0.0.1:${DAGSTER_UI_PORT:-3000}:4180", "${UI_BIND:-127.0.0.1}:3000:4180", "[::1]:3000:4180")
    for entry in (*loopback, {"host_ip": "127.0.0.1", "published": "3000", "target": 4180}):
        assert binds_loopback(published_host_ip(entry)), entry


def test_only_the_ui_proxy_publishes_a_port_and_only_on_loopback(compose):
    services = compose["services"]
    assert "ports" not in services["webserver"]
    assert {name for name, svc in services.items() if svc.get("ports")} == {UI_PROXY}
    # Host networking would publish every port a service listens on, around this check.
    assert [name for name, svc in services.items() if svc.get("network_mode") == "host"] == []
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert binds_loopback(published_host_ip(port)), f"{name} publishes {port} beyond loopback"


def test_ui_proxy_signs_in_through_oidc_before_forwarding_to_the_webserver(compose):
    services = compose["services"]
    proxy = services[UI_PROXY]
    image, tag = proxy["image"].rsplit(":", 1)
    assert image == "quay.io/oauth2-proxy/oauth2-proxy" and re.fullmatch(r"v\d+\.\d+\.\d+", tag)
    # Its settings live in the environment only, where this test reads them (flags would override).
    assert "command" not in proxy and "entrypoint" not in proxy
    env = environment_of(proxy)
    upstream, webserver = urlsplit(env["OAUTH2_PROXY_UPSTREAMS"]), services["webserver"]["command"]
    assert (upstream.hostname, upstream.port) == ("webserver", int(webserver[webserver.index("-p") + 1]))
    [published] = proxy["ports"]
    assert str(published).rsplit(":", 1)[1] == env["OAUTH2_PROXY_HTTP_ADDRESS"].rsplit(":", 1)[1]
    for setting in ("OIDC_ISSUER_URL", "CLIENT_ID", "CLIENT_SECRET", "REDIRECT_URL", "EMAIL_DOMAINS", "COOKIE_SECRET"):
        # Required, never defaulted: an unset allowed domain must not become "any account".
        assert REQUIRED_VARIABLE.fullmatch(env[f"OAUTH2_PROXY_{setting}"]), setting
    assert env["OAUTH2_PROXY_COOKIE_SECURE"] == "true" and env["OAUTH2_PROXY_COOKIE_SAMESITE"] in ("lax", "strict")
    bypasses = [name for name in env if "SKIP_AUTH" in name or "TRUSTED_IP" in name or "SKIP_JWT" in name]
    assert bypasses == []


def test_no_secret_is_written_in_the_compose_file(compose):
    checked = set()
    for name, svc in compose["services"].items():
        for variable, value in environment_of(svc).items():
            if SECRET_NAME.search(variable):
                # A default (${X:-...}) would be a secret written in the file too.
                assert REQUIRED_VARIABLE.fullmatch(value), f"{name}: {variable} is not a required ${{...}} reference"
                checked.add(variable)
    assert {"POSTGRES_PASSWORD", "DAGSTER_PG_PASSWORD", "OAUTH2_PROXY_CLIENT_SECRET", "OAUTH2_PROXY_COOKIE_SECRET"} <= checked


def test_every_pulled_image_names_a_version(compose):
    services = compose["services"].values()
    built_here = {svc["image"] for svc in services if "build" in svc}
    for image in {svc["image"] for svc in services if "image" in svc} - built_here:
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image


def test_webserver_and_daemon_load_the_deployed_workspace(compose):
    services = compose["services"]
    workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
    [location] = workspace["load_from"]
    code_server = services[location["grpc_server"]["host"]]["command"]
    assert int(code_server[code_server.index("-p") + 1]) == location["grpc_server"]["port"]
    for name in ("webserver", "daemon"):
        command = services[name]["command"]
        assert f"./deploy/workspace.yaml:{command[command.index('-w') + 1]}:ro" in services[name]["volumes"], name
