"""Run settings as a Dagster resource: one place for data directory, scale and physics."""


import os
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from eap_assets.core import cells, linesource, stages, variants
from eap_assets.core.eaps import EAPConfig
from eap_assets.core.intracellular import StimulusConfig
from eap_assets.core.noise import NoiseConfig
from eap_assets.core.probe import get_probe, placement_box
from eap_assets.core.recording import EAPS_FACTOR, Augmentation, RecordingSpec

if TYPE_CHECKING:  # imported where used: the recording set pulls in the learning stack
    from eap_assets.core.recording_set import RecordingSetConfig

#: Environment variables that set the defaults of :class:`SimulationSettings` for a deployment.
ENV_DATA_DIR = "EAP_ASSETS_DATA_DIR"
ENV_PRESET = "EAP_ASSETS_PRESET"
ENV_MODEL_FOLDERS = "EAP_ASSETS_MODEL_FOLDERS"
#: Settings field of each :class:`~eap_assets.core.noise.NoiseConfig` field (to name it in errors).
NOISE_FIELDS = {"rms_uv": "noise_rms_uv", "kind": "noise_kind", "band_hz": "noise_band_hz", "seed": "seed"}
#: Name suffix of a morphology variant (:meth:`eap_assets.core.variants.VariantSpec.suffix`): recognises
#: a variant partition whose folder is not (or no longer) on disk.
_VARIANT_SUFFIX = re.compile(r"_sx\d+\.\d{3}_sy\d+\.\d{3}_sz\d+\.\d{3}_j\d+\.\d_s\d+$")


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
    probe: str = Field(default="SqMEA-10-15", description="Probe: a MEAutility name, 'Neuropixels-1.0', or a "
                                                         "probeinterface JSON file (.json). The box of soma "
                                                         "positions follows its contacts.")
    medium: str = Field(default="infinite", description="'infinite' (paper) or 'mea_plane' (MEArec: potential x2).")
    min_amplitude: float = Field(default=30.0, description="Peak-to-peak (µV) an EAP needs on one contact.")
    seed: int = Field(default=0, description="Root seed of every random draw (placements, rotations, spikes, splits).")
    test_fraction: float = Field(default=0.1, description="Share of each cell's EAPs held out for testing.")
    validation_fraction: float = Field(default=0.1, description="Share of the rest kept for validation.")
    force: bool = Field(default=False, description="Recompute even when an up-to-date artefact exists.")
    noise_rms_uv: float = Field(default=0.0, description="RMS of recording noise added to EAPs before feature "
                                                         "extraction, µV (0: none).")
    noise_kind: str = Field(default="white", description="'white' (Gaussian) or 'band' (Gaussian band-passed "
                                                         "to noise_band_hz).")
    noise_band_hz: list[float] = Field(default=[300.0, 6000.0], description="Pass band (low, high) of 'band' "
                                                                            "noise, Hz.")
    variants_per_cell: int = Field(default=0, description="Morphology variants made of every BBP model and "
                                                          "simulated like any model (0: none, the paper's 13 cells).")
    variant_scale_range: list[float] = Field(default=[0.8, 1.2], description="Range (low, high) of each axis' "
                                                                             "scale factor of a variant.")
    variant_jitter_deg: float = Field(default=5.0, description="Largest rotation of a variant's branches about "
                                                               "their attachment points, degrees (0: none).")

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
        x_range, y_range, z_range = placement_box(self.probe)  # the paper's box for SqMEA-10-15
        return replace(EAPConfig(), probe=self.probe, n_eaps=n_eaps, rotation=rotation, medium=self.medium,
                       min_amplitude=self.min_amplitude, seed=self.seed, x_range=x_range, y_range=y_range,
                       z_range=z_range)

    @property
    def variants_path(self) -> Path:
        """Folder of the morphology variants (``morphology_variants``): ``<data_dir>/variants``."""
        return self.data_path / "variants"

    def noise_config(self) -> NoiseConfig:
        """Recording noise of the feature stage (ValueError naming the settings field of a bad value).

        Disabled (``noise_rms_uv == 0``) by default; then feature tables and their keys are the noise-free ones.
        """
        values = {"rms_uv": self.noise_rms_uv, "kind": self.noise_kind, "band_hz": tuple(self.noise_band_hz),
                  "seed": self.seed}
        try:
            return NoiseConfig(**values)
        except ValueError as exc:
            raise self.noise_error(exc) from None

    def noise_error(self, exc: ValueError) -> ValueError:
        """``exc`` (raised by :class:`NoiseConfig`) restated with the name and value of the settings field."""
        for name, field in NOISE_FIELDS.items():
            if f"NoiseConfig.{name}" in str(exc):
                return ValueError(f"settings.{field}={getattr(self, field)!r}: {exc}")
        return ValueError(f"noise settings: {exc}")

    def variant_factor_range(self) -> tuple[float, float]:
        """``variant_scale_range`` as (low, high) (ValueError naming the field otherwise)."""
        if len(self.variant_scale_range) != 2:
            raise ValueError(f"settings.variant_scale_range must be [low, high], got {self.variant_scale_range!r}")
        low, high = (float(f) for f in self.variant_scale_range)
        return low, high

    def variant_names(self, parent: str) -> list[str]:
        """Names of the variants of model ``parent`` the current settings ask for (none when
        ``variants_per_cell`` is 0); the same draw as :func:`eap_assets.core.variants.make_random_variants`."""
        if self.variants_per_cell < 1:
            return []
        try:
            specs = variants.draw_variant_specs(parent, self.variants_per_cell, self.variant_factor_range(),
                                                self.variant_jitter_deg, self.seed)
        except ValueError as exc:
            raise ValueError(f"variant settings (variants_per_cell={self.variants_per_cell}, "
                             f"variant_scale_range={self.variant_scale_range}, "
                             f"variant_jitter_deg={self.variant_jitter_deg}): {exc}") from None
        return [spec.variant_name(parent) for spec in specs]

    def model_roots(self) -> list[Path]:
        """Folders scanned for cell models: MEArec's, ``model_folders`` and, when ``variants_per_cell`` > 0,
        :attr:`variants_path`."""
        roots = [cells.mearec_models_dir(), *(Path(f).expanduser() for f in self.model_folders)]
        return [*roots, self.variants_path] if self.variants_per_cell > 0 else roots

    def scan_models(self) -> tuple[dict[str, cells.CellModel], dict[str, str]]:
        """Valid models by name, and folder -> problem for the folders that are not valid models.

        A variants folder that does not exist yet (``morphology_variants`` not materialised) is no problem.
        """
        found, problems = cells.scan_cell_models(self.model_roots())
        problems.pop(str(self.variants_path), None)
        return found, problems

    def is_variant(self, name: str, models: dict[str, cells.CellModel] | None = None) -> bool:
        """Whether cell model ``name`` is a morphology variant (``CellModel.parent`` set).

        ``models``: a scan to look it up in (default: :meth:`scan_models` plus :attr:`variants_path`, so
        that variants made earlier are recognised even with ``variants_per_cell`` = 0). A name found in
        no scan is a variant if it ends in a variant suffix (its folder was removed).
        """
        if models is None:
            models = self.scan_models_with_variants()
        if name in models:
            return models[name].parent is not None
        return bool(_VARIANT_SUFFIX.search(name))

    def scan_models_with_variants(self) -> dict[str, cells.CellModel]:
        """Valid models of :meth:`model_roots` and of :attr:`variants_path` if it exists, by name."""
        roots = self.model_roots()
        if self.variants_path not in roots and self.variants_path.is_dir():
            roots.append(self.variants_path)
        return cells.scan_cell_models(roots)[0]

    def cell_model(self, name: str) -> cells.CellModel:
        """One model by name (CellModelError naming it and what is wrong otherwise)."""
        found, problems = self.scan_models()
        if name in found:
            return found[name]
        for folder, problem in problems.items():
            if Path(folder).name == name:
                raise cells.CellModelError(problem)
        raise cells.CellModelError(f"cell model {name!r} not found in {', '.join(map(str, self.model_roots()))}")


def resource_fields(resource: dg.ConfigurableResource) -> dict:
    """The configured fields of a resource, by name (what run config, the settings file and the settings
    sources' data versions hold)."""
    return {name: getattr(resource, name) for name in type(resource).model_fields}


def default_settings() -> SimulationSettings:
    """Settings of this deployment: defaults, overridden by ``EAP_ASSETS_*`` environment variables."""
    folders = [f for f in os.environ.get(ENV_MODEL_FOLDERS, "").split(os.pathsep) if f]
    return SimulationSettings(data_dir=str(Path(os.environ.get(ENV_DATA_DIR, "data")).resolve()),
                              preset=os.environ.get(ENV_PRESET, "paper"), model_folders=folders)


# the recording recipe's defaults live in the science core (one home); the resource exposes them
_SPEC, _AUGMENTATION = RecordingSpec(), Augmentation()


class RecordingSettings(dg.ConfigurableResource):
    """What "looks like a recording" means for the models trained for real data (``recording_*`` assets).

    Geometry of the simulated EAPs (medium, box of soma positions), the input spec of the models
    (band-pass, window around the negative peak), the detection rule, the augmentation (copies with
    template noise, noise correlation, filter order and alignment jitter) and the abstention targets
    of the served classifiers. Every field can be changed per run in the launchpad
    (``resources.recording.config``); a change gives the affected artefacts new keys.
    """

    medium: str = Field(default="auto", description="Medium of the simulated EAPs: 'auto' (the probe kind's: "
                                                    "'mea_plane' for a planar MEA, whose non-conducting plane "
                                                    "doubles the potential as in MEArec; 'infinite' for a shank), "
                                                    "'mea_plane' or 'infinite'.")
    x_range_um: list[float] = Field(default=[10.0, 100.0], description="Soma distance from the probe plane, µm: "
                                                                      "the whole range where a unit is detectable.")
    overhang_um: float = Field(default=30.0, description="Somata up to this far beyond the probe's outer contacts "
                                                         "(y, z), µm (MEArec's default overhang).")
    min_amplitude_uv: float = Field(default=30.0, description="Detection rule: band-passed, noise-free "
                                                              "peak-to-peak on one contact, µV.")
    eaps_factor: float = Field(default=EAPS_FACTOR,
                               description="Accepted EAPs per cell and rotation: this many times the paper's (the "
                                           "box is ~5x the paper's volume and every orientation is drawn).")
    band_hz: list[float] = Field(default=list(_SPEC.band_hz), description="Band-pass of the recording, Hz.")
    filter_order: int = Field(default=_SPEC.filter_order,
                              description="Butterworth order of the band-pass (zero-phase; MEArec's 3).")
    ms_before: float = Field(default=_SPEC.ms_before, description="Model window before the negative peak, ms.")
    ms_after: float = Field(default=_SPEC.ms_after, description="Model window after the negative peak, ms.")
    copies: int = Field(default=_AUGMENTATION.copies, description="Augmented copies of every EAP.")
    noise_rms_uv: list[float] = Field(default=list(_AUGMENTATION.noise_rms_uv),
                                      description="Range of the recording noise RMS, µV.")
    spikes_per_template: list[float] = Field(default=list(_AUGMENTATION.spikes_per_template),
                                             description="Range (log-uniform) of the spikes a template averages "
                                                         "(a sorted unit keeps 50 or more).")
    correlation_um: list[float] = Field(default=list(_AUGMENTATION.correlation_um),
                                        description="Range of the distance at which the noise of two contacts "
                                                    "correlates 0.5, µm.")
    jitter_samples: int = Field(default=_AUGMENTATION.jitter_samples, description="Largest alignment offset, samples.")
    filter_orders: list[int] = Field(default=list(_AUGMENTATION.filter_orders),
                                     description="Butterworth orders of the copies' band-pass (users' filters "
                                                 "differ).")
    waveform_components: int = Field(default=100, description="Principal components of the waveform basis.")
    abstain_accuracy_binary: float = Field(default=0.99, description="Served E/I classifier: abstain below the "
                                                                     "confidence whose retained validation units "
                                                                     "reach this accuracy.")
    abstain_accuracy_mtype: float = Field(default=0.95, description="Likewise for the m-type classifier.")

    def spec(self, settings: SimulationSettings) -> RecordingSpec:
        """The models' input spec (ValueError naming a bad value)."""
        low, high = self.band_hz
        return RecordingSpec(fs_hz=1000.0 / settings.stimulus().dt, band_hz=(low, high),
                             filter_order=self.filter_order, ms_before=self.ms_before, ms_after=self.ms_after,
                             medium=self.resolved_medium(settings), probe=settings.probe)

    def resolved_medium(self, settings: SimulationSettings) -> str:
        """``medium``, with ``auto`` replaced by the probe kind's medium (:attr:`eap_assets.core.probe.Probe.default_medium`)."""
        medium = get_probe(settings.probe).default_medium if self.medium == "auto" else self.medium
        linesource.medium_factor(medium)
        return medium

    def eap_config(self, settings: SimulationSettings, rotation: str) -> EAPConfig:
        """EAP settings of the recording family for one rotation: the medium and the box (the probe's
        extent plus the overhang in y and z, ``x_range_um`` in x); acceptance on the raw peak-to-peak."""
        x_range, y_range, z_range = placement_box(settings.probe, tuple(self.x_range_um), self.overhang_um)
        paper = settings.eap_config(rotation)
        return replace(paper, medium=self.resolved_medium(settings), x_range=x_range, n_eaps=self.n_eaps(paper.n_eaps),
                       y_range=y_range, z_range=z_range)

    def n_eaps(self, paper_n_eaps: int) -> int:
        """Accepted EAPs per cell and rotation of the recording family."""
        if not (self.eaps_factor > 0):
            raise ValueError(f"recording.eaps_factor must be > 0, got {self.eaps_factor!r}")
        return max(1, int(round(self.eaps_factor * paper_n_eaps)))

    def set_config(self, settings: SimulationSettings) -> "RecordingSetConfig":
        """The training set's settings (:class:`eap_assets.core.recording_set.RecordingSetConfig`)."""
        from eap_assets.core.recording_set import RecordingSetConfig
        from eap_assets.core.waveform import WaveformConfig

        augmentation = Augmentation(copies=self.copies, noise_rms_uv=tuple(self.noise_rms_uv),
                                    spikes_per_template=tuple(self.spikes_per_template),
                                    correlation_um=tuple(self.correlation_um), jitter_samples=self.jitter_samples,
                                    filter_orders=tuple(self.filter_orders), seed=settings.seed)
        return RecordingSetConfig(spec=self.spec(settings), augmentation=augmentation,
                                  min_amplitude_uv=self.min_amplitude_uv, test_fraction=settings.test_fraction,
                                  validation_fraction=settings.validation_fraction,
                                  waveform=WaveformConfig(n_components=self.waveform_components, max_fit_rows=4000),
                                  seed=settings.seed)

    def abstain_accuracy(self, task: str) -> float:
        return self.abstain_accuracy_binary if task == "binary" else self.abstain_accuracy_mtype
