"""Proof that a stored Redis snapshot is usable: it is loaded into scratch servers and their
content compared with the facts its manifest recorded.

The weekly Dagster check `snapshot_restores` runs this, and so does `auction-backup verify
--deep` from the CLI, which needs no Dagster; nothing here touches a production server.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from auction_backup_pipelines.redis.client import VerificationError
from auction_backup_pipelines.redis.facts import Facts, compare_facts, server_facts
from auction_backup_pipelines.redis.restore import loaded_servers
from auction_backup_pipelines.redis.scratch import scratch_dir
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository


@dataclass(frozen=True)
class SnapshotVerification:
    """What a verification proved: the backup loads into exactly the content its manifest records."""

    backup: str  # the backup's prefix in the repository
    keys: int
    digest: str  # content digest of the loaded keys, equal to the manifest's
    volatile_checked: int
    volatile_expired: int  # keys with a TTL that expired since the snapshot, as expected
    volatile_partly_expired: int

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict in declaration order, for metadata and JSON."""
        return dataclasses.asdict(self)


def verify_snapshot(repo: Repository, backup: Backup) -> SnapshotVerification:
    """Load the backup into scratch servers and compare their content with the manifest."""
    repo.verify(backup)
    try:
        expected = Facts.from_json(backup.metadata["content"])
    except (KeyError, TypeError, ValueError) as exc:
        # Every snapshot this project writes records its content; one without (or with a
        # malformed record) cannot be checked, which is a verification failure, not a crash.
        raise VerificationError(
            f"backup {backup.prefix} records no usable content facts ({type(exc).__name__}: {exc}); "
            "its restore cannot be verified"
        ) from None
    actual = Facts(expected.bucket_ms)
    with scratch_dir() as tmp, loaded_servers(repo, backup, tmp) as servers:
        for srv in servers:
            actual.merge(server_facts(srv))
    assert actual.observed_ms is not None
    problems, summary = compare_facts(expected, actual, actual.observed_ms)
    if problems:
        raise VerificationError(
            f"backup {backup.prefix} does not load into what its manifest records: " + "; ".join(problems[:10])
        )
    return SnapshotVerification(backup=backup.prefix, keys=actual.keys, digest=f"{actual.digest:016x}", **summary)
