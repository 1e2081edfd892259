"""The whole-platform recovery drill: PostgreSQL, Kafka and Redis recovered to one moment T in
scratch targets, measured (recovery time, data-loss window) and checked against the
cross-system invariants. `engine.run_drill` is the entry point; the CLI's `drill` command and the
weekly Dagster `platform_drill` both call it. Nothing here touches a production server's data.
"""
