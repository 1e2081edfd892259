"""The newest *good* backup of an artifact: what `restore … --latest` restores.

Why: at 3 a.m. an operator wants "the last backup that works", not a day to look up. Good means
complete (it has a manifest) and not condemned by its latest restore verdict
(repository/verdicts.py): a backup whose restore check failed is skipped, one never checked or
whose check was inconclusive is taken (as retention treats it while it is the newest). A verdict
that cannot be read counts as none, as everywhere else. No Dagster.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.repository import layout, verdicts
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.manifest import Backup, NotFoundError
from auction_backup_pipelines.repository.repository import Repository

__all__ = ["Choice", "artifacts_of", "newest_good", "newest_good_day"]


@dataclass(frozen=True)
class Choice:
    """The backup chosen, and the newer ones passed over (with why), for the operator to read."""

    backup: Backup
    skipped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"--latest chose {self.backup.prefix} (the newest backup without a failed restore verdict)"
        return text + (f"; skipped {'; '.join(self.skipped)}" if self.skipped else "")


def _refs(repo: Repository, system: str, artifact: str) -> list[BackupRef]:
    """Every complete backup of the artifact, newest first, from one listing."""
    refs = []
    for obj in repo.backend.list(layout.backups_prefix(system, artifact)):
        found = layout.parse_file_key(obj.key) if layout.is_manifest_key(obj.key) else None
        if found is not None and found[0].artifact == artifact:
            refs.append(found[0])
    return sorted(refs, key=lambda r: (r.day, r.backup_id), reverse=True)


def newest_good(repo: Repository, system: str, artifact: str, until: dt.date | None = None) -> Choice:
    """The newest backup of (system, artifact), on or before `until` if given, whose latest verdict
    is not `failed`; NotFoundError naming what was skipped when there is none."""
    skipped: list[str] = []
    for ref in _refs(repo, system, artifact):
        if until is not None and ref.day > until:
            continue
        try:
            verdict = verdicts.read(repo, ref)
        except BackupError:
            verdict = None  # unreadable: counts as no verdict
        if verdict is not None and verdict.failed:
            skipped.append(f"{ref.key}: restore check failed {verdict.verified_at} ({verdict.error})")
            continue
        return Choice(repo.load_manifest(ref.manifest_key), skipped)
    why = f" ({len(skipped)} failed their restore check)" if skipped else ""
    raise NotFoundError(f"no good {system}/{artifact} backup in {repo.describe()}{why}")


def newest_good_day(repo: Repository, system: str, artifacts: list[str]) -> tuple[dt.date, list[Choice]]:
    """The newest day on which one of `artifacts` has a good backup, and each artifact's choice on
    that day (artifacts without a good backup that day are left out)."""
    choices = []
    for artifact in artifacts:
        try:
            choices.append(newest_good(repo, system, artifact))
        except NotFoundError:
            continue
    if not choices:
        raise NotFoundError(f"no good {system} backup of {', '.join(artifacts) or 'any artifact'} in {repo.describe()}")
    newest = max(c.backup.day for c in choices)
    return newest, [c for c in choices if c.backup.day == newest]


def artifacts_of(repo: Repository, system: str) -> list[str]:
    """The artifacts of `system` that have at least one complete backup, from one listing."""
    found = set()
    for obj in repo.backend.list(layout.backups_prefix(system)):
        parsed = layout.parse_file_key(obj.key) if layout.is_manifest_key(obj.key) else None
        if parsed is not None:
            found.add(parsed[0].artifact)
    return sorted(found)
