"""The live PostgreSQL primary as a source asset, so the UI draws every PostgreSQL backup's lineage
from the server it reads (as defs/kafka does for each live topic)."""

from dagster import AssetSpec

from ..shared.keys import POSTGRES_PRIMARY_KEY

postgres_primary = AssetSpec(
    POSTGRES_PRIMARY_KEY,
    group_name="postgres",
    kinds={"postgres"},
    description="The live Auction Flow PostgreSQL primary (POSTGRES_*): dumped, base-backed-up and streamed into the WAL archive.",
)
