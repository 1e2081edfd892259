"""Loader of the shared resources: every domain's assets, checks and jobs bind to these keys."""

import dagster as dg

from ..alerting.resources import build_alerting_resource
from .loading import current_settings
from .resources import build_resources


@dg.definitions
def defs() -> dg.Definitions:
    settings = current_settings()
    return dg.Definitions(resources={**build_resources(settings), "alerting": build_alerting_resource(settings)})
