"""Shared fixtures: the real BBP models and short real NEURON simulations of two of them."""

from __future__ import annotations

import os

import pytest

from eap_assets.core import cells
from eap_assets.core.intracellular import simulate_spike_templates
from eap_assets.core.stages import QUICK_STIMULUS

INTERNEURON = "L5_BP_bAC217_1"
PYRAMIDAL = "L5_TTPC1_cADpyr232_1"
#: Short simulations for CI: the quick preset, 400 ms and 3 kept spikes (paper: 1200 ms, 10; docs/cells.md).
SHORT = QUICK_STIMULUS


@pytest.fixture(scope="session")
def models() -> dict[str, cells.CellModel]:
    return cells.discover_cell_models()


@pytest.fixture(scope="session")
def bp_templates(models):
    return simulate_spike_templates(models[INTERNEURON], SHORT)


@pytest.fixture(scope="session")
def ttpc1_templates(models):
    return simulate_spike_templates(models[PYRAMIDAL], SHORT)


@pytest.fixture(scope="module")
def dagster_home(tmp_path_factory):
    """A fresh Dagster instance directory for the module's runs (``$DAGSTER_HOME``, restored after)."""
    home = tmp_path_factory.mktemp("dagster_home")
    old = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("DAGSTER_HOME", None)
    else:
        os.environ["DAGSTER_HOME"] = old
