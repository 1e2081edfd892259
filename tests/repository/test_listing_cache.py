"""A listing parses each manifest once per version: listing again reads nothing new, and a
manifest written again (another size or version) is read again, on both backends."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import BinaryIO

import pytest

from auction_backup_pipelines.policy import pruning
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.s3 import S3Backend
from auction_backup_pipelines.repository.storage import Backend, LocalBackend, WrappingBackend
from auction_backup_pipelines.settings import OffsiteSettings

DAY = dt.date(2026, 11, 20)


class CountingReads(WrappingBackend):
    def __init__(self, inner: Backend):
        super().__init__(inner)
        self.reads: list[str] = []

    def reader(self, key: str) -> BinaryIO:
        self.reads.append(key)
        return self.inner.reader(key)


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path):
    if request.param == "local":
        yield CountingReads(LocalBackend(str(tmp_path / "repo")))
        return
    s3 = S3Backend.from_settings(OffsiteSettings.from_env(), backoff=0.01)
    s3.prefix = f"test-cache-{uuid.uuid4().hex[:10]}/"
    yield CountingReads(s3)
    s3.delete_many(o.key for o in s3.list())


def backup(repo: Repository, day: dt.date, body: bytes = b"x"):
    with repo.begin("redis", "snapshot", day) as w:
        with w.open_file("dump.rdb") as f:
            f.write(body)
    return w.committed


def manifest_reads(b: CountingReads) -> int:
    return sum(k.endswith("manifest.json") for k in b.reads)


def test_listing_again_reads_no_manifest_and_a_rewritten_one_is_read_again(backend):
    first = backup(Repository(backend), DAY)
    backup(Repository(backend), DAY + dt.timedelta(days=1))
    repo = Repository(backend)  # as a sensor tick or a prune starts: nothing parsed yet
    backend.reads.clear()
    assert len(repo.list()) == 2
    assert manifest_reads(backend) == 2
    pruning.plan(repo)
    repo.list("redis", "snapshot")
    assert manifest_reads(backend) == 2, "listings after the first must reuse the parsed manifests"

    # Written again (as an edit would): the listing must see the new content, not the cached one.
    with backend.reader(first.manifest_key) as f:
        raw = f.read()
    edited = raw.replace(b'"partition": "2026-11-20"', b'"partition":  "2026-11-20"')
    assert edited != raw
    with backend.writer(first.manifest_key) as f:
        f.write(edited)
    backend.reads.clear()
    repo.list()
    assert backend.reads.count(first.manifest_key) == 1
    assert manifest_reads(backend) == 1
