"""Cell models and their spike templates (NEURON), one partition per cell model."""


import json

import dagster as dg
import numpy as np

from eap_assets.core import cells, intracellular, plots, stages
from eap_assets.core.probe import get_probe
from eap_assets.core.storage import atomic_path
from eap_assets.defs.metadata import figure_metadata, key_metadata
from eap_assets.defs.partitions import cell_partitions
from eap_assets.defs.resources import SimulationSettings
from eap_assets.defs.sources import CELL_MODEL_FILES
from eap_assets.defs.tags import k8s_op_tags


@dg.asset(partitions_def=cell_partitions, deps=[CELL_MODEL_FILES, "stimulus_settings"], group_name="cells", kinds={"neuron"},
          code_version="cell-model-1",
          pool="neuron", op_tags=k8s_op_tags("neuron"))
def cell_model(context: dg.AssetExecutionContext, settings: SimulationSettings) -> dg.MaterializeResult:
    """A BBP / NMC-portal cell model, validated, its mechanisms compiled and loaded, instantiated in NEURON.

    Writes ``cell_models/<cell>.json`` (labels, segments, mechanisms, model key) and a picture of
    the cell over the MEA as in the ``norot`` dataset (paper Fig. 2).
    """
    model = settings.cell_model(context.partition_key)
    cells.ensure_mechanisms(model)
    geometry = cells.segment_geometry(cells.load_lfpy_cell(model, tstop=1.0))
    key = cells.model_hash(model)
    n_seg = int(geometry["seg_diam"].size)
    record = {"name": model.name, "path": str(model.path), "layer": model.layer, "mtype": model.mtype,
              "etype": model.etype, "ei": model.ei_label, "segments": n_seg, "morphology": model.morphology.name,
              "mechanisms": sorted(p.stem for p in model.mod_files), "template": model.template_name, "key": key}
    folder = settings.data_path / "cell_models"
    with atomic_path(folder / f"{model.name}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    soma = 0.5 * (geometry["seg_start"][0] + geometry["seg_end"][0])
    figure = plots.cell_on_probe(geometry, soma, get_probe(settings.probe), model.name)
    return dg.MaterializeResult(
        metadata={"m-type": model.mtype, "E/I": model.ei_label, "e-type": model.etype, "segments": n_seg,
                  "morphology": dg.MetadataValue.path(str(model.morphology)),
                  "mechanisms": ", ".join(record["mechanisms"]), **key_metadata(key, True),
                  **figure_metadata(figure, folder / f"{model.name}.png", "cell over the MEA")},
        data_version=dg.DataVersion(key),
    )


@dg.asset(partitions_def=cell_partitions, deps=[cell_model, "stimulus_settings"], group_name="cells", kinds={"neuron", "numpy"},
          code_version=intracellular.CODE_VERSION, pool="neuron", op_tags=k8s_op_tags("neuron"))
def spike_templates(context: dg.AssetExecutionContext, settings: SimulationSettings) -> dg.MaterializeResult:
    """Spike templates: a somatic current step tuned until the cell fires the target spike count,
    then every segment's membrane current and the soma Vm around each kept spike
    (``templates/<cell>.npz``). Up-to-date templates (same model files, settings, code) are reused.
    """
    model = settings.cell_model(context.partition_key)
    templates, computed = stages.ensure_templates(model, settings.stimulus(), settings.data_path, settings.force,
                                                  log=context.log.info)
    p = templates.provenance
    t_ms = (np.arange(templates.n_samples) - templates.n_pre) * templates.dt
    figure = plots.somatic_spikes(t_ms, templates.vsoma, templates.imem[:, 0, :], model.name)
    path = stages.templates_path(settings.data_path, model.name)
    return dg.MaterializeResult(
        metadata={"current (nA)": round(templates.amplitude, 5), "spikes in simulation": templates.spike_count,
                  "kept spikes": templates.n_spikes, "segments": templates.n_segments,
                  "simulations": p["simulations"], "accepted simulation (s)": p["final_simulation_s"],
                  "all simulations (s)": p.get("total_simulation_s"), "NEURON": p["neuron"], "LFPy": p["lfpy"],
                  "path": dg.MetadataValue.path(str(path)), **key_metadata(p["settings_hash"], computed),
                  **figure_metadata(figure, path.with_suffix(".png"), "somatic spikes")},
        data_version=dg.DataVersion(p["settings_hash"]),
    )


@dg.asset_check(asset=spike_templates, partitions_def=cell_partitions, blocking=True)
def spike_templates_complete(context: dg.AssetCheckExecutionContext,
                             settings: SimulationSettings) -> dg.AssetCheckResult:
    """The stored templates are current and hold the configured number of spikes (paper: 10),
    a spike count within the accepted range, finite currents and the somatic peak at its index."""
    stimulus = settings.stimulus()
    templates = stages.load_current_templates(settings.cell_model(context.partition_key), stimulus,
                                              settings.data_path)
    problems = []
    if templates.n_spikes != stimulus.n_keep:
        problems.append(f"{templates.n_spikes} spike templates, expected {stimulus.n_keep}")
    if not stimulus.n_keep + 1 <= templates.spike_count <= stimulus.max_spikes:
        problems.append(f"{templates.spike_count} spikes fired, outside {stimulus.n_keep + 1}-{stimulus.max_spikes}")
    if not (np.isfinite(templates.imem).all() and np.isfinite(templates.vsoma).all()):
        problems.append("NaN or inf in currents or soma Vm")
    peaks = np.argmax(templates.vsoma, axis=1)
    if np.any(np.abs(peaks - templates.n_pre) > 1):
        problems.append(f"somatic peaks at samples {sorted(set(peaks.tolist()))}, expected {templates.n_pre}")
    return dg.AssetCheckResult(passed=not problems, description="; ".join(problems) or None,
                               metadata={"templates": templates.n_spikes, "spikes fired": templates.spike_count})
