"""Where Auction Flow keeps its data in Kafka and Redis: the event topics' names and the Redis keys.

The platform's own names are the defaults (`PLATFORM`): topics `bid-events`, `auction-closed`,
`payment-events`, `auction-events`, Redis keys `auction:<id>`, `leaderboard:<id>`… A platform
that shares a Kafka cluster or a Redis server with others prefixes them; so does a test that
seeds a platform of its own on the shared stack. The workload generator (which writes them) and
the cross-system invariants (which read them) take the same `PlatformNames`, so both always
agree on where a bid's event or an auction's hash is.
"""

from __future__ import annotations

from dataclasses import dataclass

TOPICS = ("auction-events", "bid-events", "auction-closed", "payment-events")


@dataclass(frozen=True)
class PlatformNames:
    topic_prefix: str = ""
    key_prefix: str = ""

    def topic(self, name: str) -> str:
        """The real name of the platform topic `name` (e.g. ``bid-events``)."""
        return self.topic_prefix + name

    def key(self, name: str) -> str:
        """The real name of the Redis key `name` (e.g. ``auction:7``)."""
        return self.key_prefix + name

    def topics(self) -> list[str]:
        """Every platform topic's real name."""
        return [self.topic(t) for t in TOPICS]


PLATFORM = PlatformNames()
