"""Run settings as a Dagster resource: one place for data directory, scale and physics."""


import os
from dataclasses import replace
from pathlib import Path

import dagster as dg
from pydantic import Field

from eap_assets.core import cells, linesource, stages
from eap_assets.core.eaps import EAPConfig
from eap_assets.core.intracellular import StimulusConfig

#: Environment variables that set the defaults of :class:`SimulationSettings` for a deployment.
ENV_DATA_DIR = "EAP_ASSETS_DATA_DIR"
ENV_PRESET = "EAP_ASSETS_PRESET"
ENV_MODEL_FOLDERS = "EAP_ASSETS_MODEL_FOLDERS"


class SimulationSettings(dg.ConfigurableResource):
    """What the simulation stages produce and where.

    Every field can be changed per run in the launchpad (``resources.settings.config``).
    Changing one that changes the data gives the affected artefacts a new key, so they are
    recomputed rather than reused; downstream assets refuse stale inputs.
    """

    data_dir: str = Field(default="data", description="Root of all artefacts (templates, EAPs, tables).")
    model_folders: list[str] = Field(default=[], description="Extra folders of NMC-portal cell models "
                                                            "(besides the 13 BBP models shipped in MEArec).")
    preset: str = Field(default="paper", description="'paper' (1.2 s, 10 spikes, 1000 EAPs) or 'quick' "
                                                     "(400 ms, 3 spikes, 50 EAPs).")
    n_eaps: int | None = Field(default=None, description="Accepted EAPs per cell and rotation (default: preset's).")
    probe: str = Field(default="SqMEA-10-15", description="MEAutility probe name.")
    medium: str = Field(default="infinite", description="'infinite' (paper) or 'mea_plane' (MEArec: potential x2).")
    min_amplitude: float = Field(default=30.0, description="Peak-to-peak (µV) an EAP needs on one contact.")
    seed: int = Field(default=0, description="Root seed of every random draw (placements, rotations, spikes, splits).")
    test_fraction: float = Field(default=0.1, description="Share of each cell's EAPs held out for testing.")
    validation_fraction: float = Field(default=0.1, description="Share of the rest kept for validation.")
    force: bool = Field(default=False, description="Recompute even when an up-to-date artefact exists.")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    def stimulus(self) -> StimulusConfig:
        """Intracellular settings of the preset."""
        return stages.get_preset(self.preset).stimulus

    def eap_config(self, rotation: str) -> EAPConfig:
        """EAP settings for one rotation mode (raises ValueError naming a bad value)."""
        linesource.medium_factor(self.medium)
        n_eaps = self.n_eaps if self.n_eaps is not None else stages.get_preset(self.preset).n_eaps
        return replace(EAPConfig(), probe=self.probe, n_eaps=n_eaps, rotation=rotation, medium=self.medium,
                       min_amplitude=self.min_amplitude, seed=self.seed)

    def model_roots(self) -> list[Path]:
        return [cells.mearec_models_dir(), *(Path(f).expanduser() for f in self.model_folders)]

    def scan_models(self) -> tuple[dict[str, cells.CellModel], dict[str, str]]:
        """Valid models by name, and folder -> problem for the folders that are not valid models."""
        return cells.scan_cell_models(self.model_roots())

    def cell_model(self, name: str) -> cells.CellModel:
        """One model by name (CellModelError naming it and what is wrong otherwise)."""
        found, problems = self.scan_models()
        if name in found:
            return found[name]
        for folder, problem in problems.items():
            if Path(folder).name == name:
                raise cells.CellModelError(problem)
        raise cells.CellModelError(f"cell model {name!r} not found in {', '.join(map(str, self.model_roots()))}")


def default_settings() -> SimulationSettings:
    """Settings of this deployment: defaults, overridden by ``EAP_ASSETS_*`` environment variables."""
    folders = [f for f in os.environ.get(ENV_MODEL_FOLDERS, "").split(os.pathsep) if f]
    return SimulationSettings(data_dir=str(Path(os.environ.get(ENV_DATA_DIR, "data")).resolve()),
                              preset=os.environ.get(ENV_PRESET, "paper"), model_folders=folders)
