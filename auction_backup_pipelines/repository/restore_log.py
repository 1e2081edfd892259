"""Restore records: each restore made from a backup, appended to the repository beside it.

Why: an operator plans with the recovery time a real restore took (its RTO), and asks "when was
this backup last restored, where to, and did it prove its rows?". The Dagster restore jobs show
that on the asset's page (an AssetObservation per restore), but a restore run from the CLI,
typically while Dagster is down, cannot write to Dagster; so both the CLI and the Dagster jobs
also append the same small record here, and the history survives either way.

Design, as for verdicts (verdicts.py): one JSON object per restore and backup,
`restores/<system>/<artifact>/<day>/<restore_id>.json` (layout.restore_record_key), written whole
through the repository's backend (so sealed when the repository is encrypted). Records are only
ever added: a record never passes for a backup's file, retention and the leftover cleanup leave
the area alone, and a record outlives the backup it names (it is history, a few hundred bytes).
A record holds where a restore wrote (a database, host:port, a folder, topics) and never a
credential.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.storage import IntegrityError

__all__ = ["RestoreRecord", "append", "history", "new_record"]

FORMAT = 1


@dataclass(frozen=True)
class RestoreRecord:
    """One restore from one backup: where to, how long it took, what it proved, who ran it."""

    backup: str  # the backup's key, <system>/<artifact>/<day>/<backup_id>
    restore_id: str  # when it finished (to the second) and 6 random hex digits
    kind: str  # "logical_dump", "pitr", "snapshot", "topic_replay"
    target: str  # where it wrote: database, host:port, data folder and port, topic @ brokers
    rto_seconds: float  # wall time of the whole restore, its verification included
    verified: int | None  # rows, keys or messages proven equal to the backup (None: not counted)
    verified_unit: str  # "rows", "keys", "messages", or "" when `verified` is None
    restored_at: str  # ISO 8601, UTC
    by: str  # "auction-backup restore redis", "redis_restore_job", ...
    run_id: str | None = None  # the Dagster run that restored it; None from the CLI
    details: dict[str, Any] = field(default_factory=dict)  # the engine's other figures (scalars)
    format: int = FORMAT

    @property
    def ref(self) -> BackupRef:
        return BackupRef.parse(self.backup)

    @property
    def key(self) -> str:
        return layout.restore_record_key(self.ref, self.restore_id)

    def metadata(self) -> dict[str, str | int | float]:
        """The record as flat metadata: what the asset's page shows for each restore (`rto_seconds` plots)."""
        md: dict[str, str | int | float] = {
            "kind": self.kind,
            "target": self.target,
            "rto_seconds": float(self.rto_seconds),
            "backup_id": self.ref.backup_id,
            "backup": self.backup,
            "restored_at": self.restored_at,
            "restored_by": self.by,
            "run_id": self.run_id or "(CLI: no Dagster run)",
            "restore_record": self.key,
        }
        if self.verified is not None:
            md[f"{self.verified_unit}_verified"] = int(self.verified)
        for name, value in self.details.items():
            md.setdefault(name, value if isinstance(value, (str, int, float)) else str(value))
        return md

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RestoreRecord:
        doc = json.loads(raw)
        known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        return cls(**known)


def new_record(
    backup: BackupRef,
    *,
    kind: str,
    target: str,
    rto_seconds: float,
    verified: int | None,
    verified_unit: str,
    by: str,
    run_id: str | None = None,
    details: dict[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> RestoreRecord:
    """A record of a restore from `backup` that finished `at` (now); `details` keeps scalars only."""
    when = at or dt.datetime.now(dt.UTC)
    return RestoreRecord(
        backup=backup.key,
        restore_id=layout.new_backup_id(when),
        kind=kind,
        target=target,
        rto_seconds=round(float(rto_seconds), 3),
        verified=verified,
        verified_unit=verified_unit if verified is not None else "",
        restored_at=when.isoformat(timespec="seconds"),
        by=by,
        run_id=run_id,
        details={k: v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for k, v in (details or {}).items()},
    )


def append(repo: Repository, record: RestoreRecord) -> str:
    """Store `record` (a new object: records are never replaced); returns its key."""
    with repo.backend.writer(record.key) as f:
        f.write(record.to_json())
    return record.key


def history(repo: Repository, system: str, artifact: str) -> list[RestoreRecord]:
    """Every restore recorded from an artifact's backups, oldest first; IntegrityError on an unreadable one."""
    found: list[RestoreRecord] = []
    for obj in repo.backend.list(layout.restores_prefix(system, artifact)):
        if layout.parse_restore_key(obj.key) is None:
            continue
        with repo.backend.reader(obj.key) as f:
            raw = f.read()
        try:
            record = RestoreRecord.from_json(raw)
        except (ValueError, TypeError) as exc:
            raise IntegrityError(f"restore record {obj.key} is unreadable: {exc}") from None
        if record.ref.system == system and record.ref.artifact == artifact:
            found.append(record)
    return sorted(found, key=lambda r: (r.restored_at, r.restore_id))
