"""Shared fixtures: the real BBP models and short real NEURON simulations of two of them."""

from __future__ import annotations

import pytest

from eap_assets.core import cells
from eap_assets.core.intracellular import StimulusConfig, simulate_spike_templates

INTERNEURON = "L5_BP_bAC217_1"
PYRAMIDAL = "L5_TTPC1_cADpyr232_1"
#: Short simulations for CI: 400 ms, 3 kept spikes (paper: 1200 ms, 10 spikes; see docs/cells.md).
SHORT = StimulusConfig(tstop=400.0, n_keep=3, max_spikes=12)


@pytest.fixture(scope="session")
def models() -> dict[str, cells.CellModel]:
    return cells.discover_cell_models()


@pytest.fixture(scope="session")
def bp_templates(models):
    return simulate_spike_templates(models[INTERNEURON], SHORT)


@pytest.fixture(scope="session")
def ttpc1_templates(models):
    return simulate_spike_templates(models[PYRAMIDAL], SHORT)
