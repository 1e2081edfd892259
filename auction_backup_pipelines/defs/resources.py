"""Dagster resources: configuration of the systems and the repository, nothing more.

Each resource turns its fields into the plain settings object the core modules take, so the
same code paths serve the CLI (which reads the environment directly) and Dagster runs.
Passwords are only ever bound through `EnvVar`, which Dagster never displays.
"""


from dagster import ConfigurableResource, EnvVar

from ..core.repository import Repository
from ..settings import KafkaSettings, PostgresSettings, RedisSettings, RepositorySettings


class PostgresResource(ConfigurableResource):
    """The PostgreSQL server to back up (POSTGRES_* variables)."""

    host: str = PostgresSettings.host
    port: int = PostgresSettings.port
    dbname: str = PostgresSettings.dbname
    user: str = PostgresSettings.user
    password: str = ""

    def settings(self) -> PostgresSettings:
        return PostgresSettings(host=self.host, port=self.port, dbname=self.dbname, user=self.user, password=self.password)


class RedisResource(ConfigurableResource):
    """The Redis server or cluster to back up (REDIS_* variables)."""

    host: str = RedisSettings.host
    port: int = RedisSettings.port
    username: str = ""
    password: str = ""
    data_dir: str = ""
    """The server's data dir, if on this machine (REDIS_DATA_DIR): BGSAVE-and-copy and the AOF fallback."""

    def settings(self) -> RedisSettings:
        return RedisSettings(host=self.host, port=self.port, username=self.username, password=self.password,
                             data_dir=self.data_dir)


class KafkaResource(ConfigurableResource):
    """The Kafka cluster and topics to back up (KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPICS)."""

    bootstrap_servers: str = KafkaSettings.bootstrap_servers
    topics: list[str] = list(KafkaSettings.topics)

    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers, topics=tuple(self.topics))


class BackupRepositoryResource(ConfigurableResource):
    """Where backups are stored (BACKUP_ROOT, BACKUP_COMPRESSION)."""

    root: str = RepositorySettings.root
    compression: str = RepositorySettings.compression

    def repository(self) -> Repository:
        return Repository.local(self.root, compression=self.compression)


def default_resources() -> dict[str, ConfigurableResource]:
    """Resources bound from the environment, with Auction Flow's defaults when unset."""
    pg, rd, kf, repo = (PostgresSettings.from_env(), RedisSettings.from_env(), KafkaSettings.from_env(), RepositorySettings.from_env())
    return {
        "postgres": PostgresResource(
            host=pg.host, port=pg.port, dbname=pg.dbname, user=pg.user, password=EnvVar("POSTGRES_PASSWORD")
        ),
        "redis": RedisResource(host=rd.host, port=rd.port, username=rd.username, data_dir=rd.data_dir,
                               password=EnvVar("REDIS_PASSWORD") if rd.password else ""),
        "kafka": KafkaResource(bootstrap_servers=kf.bootstrap_servers, topics=list(kf.topics)),
        "backup_repo": BackupRepositoryResource(root=repo.root, compression=repo.compression),
    }
