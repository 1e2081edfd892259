"""Restore verdicts: the latest restore verification of each backup, kept beside it in the repository.

Why: retention keeps "the newest good backup" of each artifact whatever else it deletes. Without
a record of restore checks, "good" only meant "its manifest exists", so a backup that had just
failed its weekly restore could be the one retention kept while it deleted the older one that
restores. Each restore check (the weekly Dagster checks and `auction-backup verify --restore`,
ops/restore_checks.py) records its verdict here; the pruning plan (policy/pruning.py) reads them
with its one listing and marks a backup whose latest verdict failed as `failed`, which the
policy never counts as good.

Design, as for the catalog (catalog.py): one small JSON object per backup,
`verdicts/<system>/<artifact>/<day>/<backup_id>.json` (layout.BackupRef.verdict_key), written
whole through the repository's backend (so sealed when the repository is encrypted) and
replaced by the next verification of the same backup: the latest verdict is the one that
counts. Only a verification that judged the backup is a verdict (`passed` or `failed`); a
check that could not run (a scratch server that would not start, a source that is down) is
`inconclusive`, stored only where no earlier verdict exists, and counts as none. Deleting a
backup deletes its verdict (Repository.delete). A verdict that cannot be read is reported as
such and counts as no verdict: it never makes a backup look good or bad.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.storage import IntegrityError

__all__ = ["FAILED", "INCONCLUSIVE", "PASSED", "RESULTS", "Verdict", "latest_verdicts", "read", "record"]

PASSED = "passed"
FAILED = "failed"
INCONCLUSIVE = "inconclusive"  # the check could not run to a verdict (a scratch target or a source down)
RESULTS = (PASSED, FAILED, INCONCLUSIVE)
FORMAT = 1


@dataclass(frozen=True)
class Verdict:
    """One restore verification of one backup: which check, its result, when, by what, and why."""

    backup: str  # the backup's key, <system>/<artifact>/<day>/<backup_id>
    check: str  # the restore check's name, e.g. "snapshot_restores"
    result: str  # PASSED, FAILED or INCONCLUSIVE
    verified_at: str  # ISO 8601, UTC
    by: str  # who ran it: "weekly_verification_job", "auction-backup verify --restore"
    error: str | None = None  # the reason, when it failed
    figures: dict[str, Any] = field(default_factory=dict)  # what was compared (tables, rows, keys, ...)
    format: int = FORMAT

    @property
    def passed(self) -> bool:
        return self.result == PASSED

    @property
    def failed(self) -> bool:
        """The backup itself failed its verification (corrupt, or restored into something else)."""
        return self.result == FAILED

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Verdict:
        doc = json.loads(raw)
        if doc.get("result") not in RESULTS:
            raise ValueError(f"result must be one of {', '.join(RESULTS)}, got {doc.get('result')!r}")
        known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        return cls(**known)


def record(
    repo: Repository,
    ref: BackupRef,
    check: str,
    passed: bool,
    by: str,
    error: str | None = None,
    figures: Mapping[str, Any] | None = None,
    at: dt.datetime | None = None,
    conclusive: bool = True,
) -> Verdict:
    """Store the verdict of one restore check on backup `ref`, replacing its previous verdict
    (`conclusive=False`: it failed without judging the backup, INCONCLUSIVE)."""
    verdict = Verdict(
        backup=ref.key,
        check=check,
        result=PASSED if passed else FAILED if conclusive else INCONCLUSIVE,
        verified_at=(at or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        by=by,
        error=None if passed else (error or "failed"),
        figures={k: v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for k, v in (figures or {}).items()},
    )
    with repo.backend.writer(ref.verdict_key) as f:
        f.write(verdict.to_json())
    return verdict


def read(repo: Repository, ref: BackupRef) -> Verdict | None:
    """The latest verdict on `ref`, None when it has none; IntegrityError when it cannot be read."""
    try:
        with repo.backend.reader(ref.verdict_key) as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        return Verdict.from_json(raw)
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"verdict {ref.verdict_key} is unreadable: {exc}") from None


def latest_verdicts(repo: Repository, keys: Iterable[str]) -> tuple[dict[str, Verdict], list[str]]:
    """The verdicts among listed `keys` (a listing of the repository), by backup key, and one
    line per verdict that could not be read (those count as no verdict)."""
    found: dict[str, Verdict] = {}
    problems: list[str] = []
    for key in keys:
        ref = layout.parse_verdict_key(key)
        if ref is None:
            continue
        try:
            verdict = read(repo, ref)
        except (IntegrityError, OSError) as exc:
            problems.append(str(exc))
            continue
        if verdict is not None and verdict.backup == ref.key:
            found[ref.key] = verdict
        elif verdict is not None:
            problems.append(f"verdict {key} names another backup ({verdict.backup}); ignored")
    return found, problems
