"""The Dagster layer: assets, checks, partitions, resources, IO manager, jobs, schedules, sensors.

Each module wraps functions of :mod:`eap_assets.core`; no science lives here.
"""

import warnings

import dagster as dg

# The partition mapping and the partitioned asset checks used here are marked beta / preview in Dagster 1.13.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
