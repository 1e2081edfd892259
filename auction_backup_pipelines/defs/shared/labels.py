"""Owners and tags on every asset, applied once to the loaded code location (definitions.py).

So the catalog can be filtered by who answers for an asset and what it is: `owners` is the team
paged for it, and the tags name its system, its artifact kind and, for offsite copies and Kafka
exports, which copy or topic. Derived from the asset key (keys.py follows the repository
layout), so an asset added later is labelled without anyone remembering to.
"""

from collections.abc import Iterable
from typing import Any

from dagster import AssetsDefinition, AssetSpec

OWNER = "team:sre"
"""The team that answers for the backups (Dagster owner format `team:<name>`)."""
SYSTEM = "auction_backup/system"
ARTIFACT = "auction_backup/artifact"
COPY = "auction_backup/copy"
TOPIC = "auction_backup/topic"


def tags_for(path: list[str]) -> dict[str, str]:
    """The tags of the asset at `path`, e.g. kafka/topic_export/bids -> system kafka, artifact topic_export, topic bids."""
    offsite = path[0] == "offsite" and len(path) > 2
    rest = path[1:] if offsite else path
    tags = {SYSTEM: rest[0], ARTIFACT: rest[1] if len(rest) > 1 else rest[0]}
    if offsite:
        tags[COPY] = "offsite"
    if rest[0] == "kafka" and len(rest) > 2:
        tags[TOPIC] = rest[2]
    return tags


def labelled(spec: AssetSpec) -> AssetSpec:
    """`spec` with the owner and the tags added (ones already set on the asset are kept)."""
    tags = {**tags_for(list(spec.key.path)), **spec.tags}
    owners = spec.owners if OWNER in spec.owners else [*spec.owners, OWNER]
    return spec.replace_attributes(owners=owners, tags=tags)


def label_assets(assets: Iterable[Any]) -> list[Any]:
    """Every asset spec and definition of `assets` labelled; anything else (none here) unchanged."""
    return [
        labelled(a) if isinstance(a, AssetSpec) else a.map_asset_specs(labelled) if isinstance(a, AssetsDefinition) else a
        for a in assets
    ]
