"""How figures read on an asset page: sizes in binary units, times in ISO-8601 UTC, locations as URLs.

The numeric metadata (`size_bytes`, `duration_s`, ...) stays as it is, since Dagster plots it over
partitions; these helpers add text beside it for a person to read at a glance.
"""

import datetime as dt
from typing import Any

from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.s3 import S3Backend
from auction_backup_pipelines.repository.storage import LocalBackend, WrappingBackend

UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: int | float) -> str:
    """1536 -> "1.5 KiB", 12_897_485 -> "12.3 MiB"; below 1 KiB the exact count."""
    value, unit = float(n), 0
    while abs(value) >= 1024 and unit < len(UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{int(n)} bytes" if unit == 0 else f"{value:.1f} {UNITS[unit]}"


def iso_utc(value: Any) -> str:
    """A moment as 2026-12-02T04:00:00Z, from a datetime or an ISO-8601 string; other text unchanged."""
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)  # the engines record UTC
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def object_url(repo: Repository, key: str) -> str:
    """Where object `key` of the repository is, as a URL of its store: file:///... or s3://bucket/key.
    Never holds credentials (an S3 endpoint's user:password is not part of it)."""
    backend = repo.storage  # the store itself, under encryption and the fail-closed guard
    while isinstance(backend, WrappingBackend):  # encryption, the fail-closed guard
        backend = backend.inner
    if isinstance(backend, LocalBackend):
        return backend.root.joinpath(*key.split("/")).as_uri()
    if isinstance(backend, S3Backend):
        return backend.where(key)
    return f"{repo.describe()}/{key}"
