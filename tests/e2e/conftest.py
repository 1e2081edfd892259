"""The `dg dev` each end-to-end UI test module runs against (one per module: torn down as soon as
the module is done, so no idle webserver and daemon load the cores while the rest of the suite runs).

It runs with its own instance and an empty backup repository, as an install that has been
watching its backups for a few days with every schedule switched off (the fixture switches them off):
the freshness checks then have a day that is due and missing, whatever the time of day. Alerts
go to a webhook receiver on loopback, and restores may go to a scratch Redis server of its own.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dagster import DagsterInstance

from auction_backup_pipelines.defs.freshness.checks import WATCHING_SINCE_KEY
from auction_backup_pipelines.localhost import free_port
from auction_backup_pipelines.redis.scratch import scratch_server
from tests.ops.test_notify import WebhookServer

from .dagster_processes import BIN, dagster_home, dg_env, graphql, process_group, wait_until
from .ui_driver import stop_schedules

DEADLINE_GRACE_S = 360
"""BACKUP_DEADLINE_GRACE_S of the shared instance: a day is overdue six minutes after its schedule's hour."""
WATCHED_FOR = dt.timedelta(days=3)
"""How long the instance claims to have watched its backups: more than the two days that may be due."""


@dataclass
class DevServer:
    port: int
    proc: subprocess.Popen
    log: Path
    webhook: WebhookServer
    restore_target: str
    """host:port of a scratch Redis server that RESTORE_ALLOWED_REDIS allows restores into."""
    restore_password: str
    """Its password ("" unless TMPDIR was too long for its unix socket)."""
    alerts: list[dict] = field(default_factory=list)

    def received_alerts(self) -> list[dict]:
        """Every alert posted to the webhook so far, as the JSON documents sent."""
        self.alerts += [json.loads(post.body) for post in self.webhook.drain()]
        return self.alerts


def watching_since(home: Path, since: dt.datetime) -> None:
    """Record in the instance when backup freshness began to be watched (defs/freshness/checks.py)."""
    with DagsterInstance.from_config(str(home)) as instance:
        instance.daemon_cursor_storage.set_cursor_values({WATCHING_SINCE_KEY: since.isoformat()})


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory) -> Iterator[DevServer]:
    """`dg dev` on a free port with its own instance and an empty backup repository."""
    tmp = tmp_path_factory.mktemp("dev")
    port = free_port()
    home = dagster_home(tmp)
    watching_since(home, dt.datetime.now(dt.UTC) - WATCHED_FOR)
    target_data = tmp / "restore-target"
    target_data.mkdir()
    with WebhookServer() as webhook, scratch_server(target_data, port=free_port()) as target:
        restore_target = f"127.0.0.1:{target.port}"
        env = dg_env(
            home,
            BACKUP_ROOT=str(tmp / "backups"),
            BACKUP_DEADLINE_GRACE_S=str(DEADLINE_GRACE_S),
            ALERT_WEBHOOK_URL=webhook.url(),
            ALERT_WEBHOOK_ALLOW_HTTP="1",
            ALERT_CHECK_SENSOR_INTERVAL_S="30",
            RESTORE_ALLOWED_REDIS=restore_target,
            # a scratch server listens with a one-off password only when TMPDIR is too long for its socket
            **({"RESTORE_REDIS_PASSWORD": target.password} if target.password else {}),
        )
        log = tmp / "dagster-dev.log"
        argv = [str(BIN / "dg"), "dev", "-h", "127.0.0.1", "-p", str(port)]
        with process_group(argv, env, log) as proc:

            def loaded():
                data = graphql(
                    port, "{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError { __typename } } } } }"
                )
                return data["workspaceOrError"]["locationEntries"][0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"

            wait_until("the code location to load", loaded, 180, proc, log)
            # The schedules start RUNNING; switched off, none fires while the tests run (one
            # crossing 02:00 UTC would back up PostgreSQL behind the freshness test's back).
            stop_schedules(port)
            yield DevServer(port, proc, log, webhook, restore_target, target.password)
