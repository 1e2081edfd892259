"""The code location: everything under `defs/`, autoloaded (Dagster's dg project layout)."""

import warnings
from pathlib import Path

import dagster as dg
from dagster._record import copy as record_copy

from auction_backup_pipelines.defs.shared.labels import label_assets

# Dagster 1.13 copies a sensor that targets a job with `owners=[]` when it binds resources
# (SensorDefinition.with_attributes), and that empty list trips the beta warning for `owners`
# on every load although no sensor here sets owners. Silence exactly that message.
warnings.filterwarnings("ignore", message="Parameter `owners` of initializer `SensorDefinition", category=dg.BetaWarning)


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    # Owners and tags on every asset, whichever folder defines it (defs/shared/labels.py).
    # Every job without an executor of its own, the asset graph's materializations and backfills
    # included, runs its steps in the run's own process: the steps of one system run one after
    # another anyway (pool=<system>), and a process per step cost each run another load of this
    # code location (about 5 s of CPU on a 2-core host) for nothing. Only the weekly verification,
    # whose checks of different systems can run side by side, keeps one process per step.
    return record_copy(loaded, assets=label_assets(loaded.assets or []), executor=dg.in_process_executor)
