"""The Dagster layer, autoloaded by `definitions.py` (`load_from_defs_folder`): one folder per domain.

Each folder holds that domain's assets, checks, jobs, schedules and sensors. Definitions that do
not depend on settings are plain module-level objects, found by the autoloader; those that do
(partition start, Kafka topics, whether an offsite store is configured, sensor intervals) are built
by the folder's `definitions.py` loader from the settings read once in `shared/loading.py`.
Everything here is thin: the work is done by the engine packages, which import no Dagster.
"""
