"""The live Redis server as a source asset, so the UI draws the snapshot's lineage from the server
it reads (as defs/kafka does for each live topic)."""

from dagster import AssetSpec

from ..shared.keys import REDIS_SERVER_KEY

redis_server = AssetSpec(
    REDIS_SERVER_KEY,
    group_name="redis",
    kinds={"redis"},
    description="The live Auction Flow Redis server, or every master of its Redis Cluster (REDIS_*).",
)
