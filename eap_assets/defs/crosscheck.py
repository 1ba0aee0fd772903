"""The cross-simulator check: the served unit classifiers on data this project did not simulate.

* ``mearec_templates`` -- MEArec's own template generation (its current search, spike cutting,
  positions, rotations, LFPy electrodes with finite contacts, the x2 of the MEA plane, its amplitude
  and shape checks) for every BBP cell model, with MEArec's own seed (:func:`eap_assets.core.crosscheck.mearec_templates`);
* ``mearec_recording`` (per sampling rate: 32 kHz and MEArec's own resampling to 30 kHz) -- a
  MEArec recording holding ``units_per_cell`` units of every cell model (10 µV noise, band-pass
  300-6000 Hz), read back with SpikeInterface's ``read_mearec`` into a ``SortingAnalyzer`` of the
  ground-truth units with a ``templates`` extension;
* ``crosscheck`` (per sampling rate) -- every unit of that analyzer classified by the registered
  champions (``eap_assets.classify``: probe matched by geometry, resampled, re-aligned), scored
  against the ground truth per cell type, with the calibration of the confidences;
* ``crosscheck_report`` -- all rates beside each classifier's own test split, and the targets.
"""

import json

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from eap_assets import registry
from eap_assets.core import cells, keys, models, plots
from eap_assets.core import crosscheck as xc
from eap_assets.core.evaluation import score_answers
from eap_assets.core.report import crosscheck_markdown
from eap_assets.core.storage import atomic_path, atomic_write_text
from eap_assets.defs.cells import cell_model
from eap_assets.defs.features import paper_cells
from eap_assets.defs.metadata import figure_metadata, key_metadata, markdown_table
from eap_assets.defs.recording import unit_classifier
from eap_assets.defs.resources import SimulationSettings
from eap_assets.defs.retries import TRANSIENT_RETRY, fail_fast
from eap_assets.defs.tags import k8s_op_tags
from eap_assets.defs.training import MLflowTracking

#: Sampling rates of the cross-check recordings, Hz: the templates' own 32 kHz, and 30 kHz (MEArec resamples).
rate_partitions = dg.StaticPartitionsDefinition(["32000", "30000"])


class CrosscheckSettings(dg.ConfigurableResource):
    """Scale and physics of the cross-simulator check (MEArec's own defaults where not stated)."""

    units_per_cell: int = Field(default=30, description="Units of every cell model in each recording (390 units: "
                                                        "a 95 % interval of about ±3.5 pp on an accuracy near 85 %; "
                                                        "with 12 it was ±5 pp, too wide to tell 88 % from 90 %).")
    templates_per_cell: int = Field(default=60, description="MEArec templates simulated per cell model (the "
                                                            "recording takes units_per_cell of them in its amplitude "
                                                            "range, somata min_dist_um apart).")
    sim_time_s: float = Field(default=1.0, description="MEArec's intracellular simulation, s.")
    duration_s: float = Field(default=60.0, description="Recording length, s.")
    noise_uv: float = Field(default=10.0, description="Recording noise, µV RMS (MEArec's default).")
    min_amp_uv: float = Field(default=50.0, description="MEArec's template amplitude range of a recording: low (also "
                                                        "MEArec's min_amp when it simulates the templates).")
    max_amp_uv: float = Field(default=300.0, description="... and high, µV.")
    min_dist_um: float = Field(default=0.0, description="Smallest distance between two units' somata, µm (MEArec's "
                                                        "25 leaves too few of the small cells, which are all within "
                                                        "35 µm of the probe: 12 units per cell could not be placed).")
    rotation: str = Field(default="3drot", description="MEArec's rotation of the cells, and the champions used.")
    seed: int = Field(default=2018, description="MEArec's own seed (not the project's).")

    def key(self, models_: list[cells.CellModel], probe: str) -> str:
        """Key of the MEArec templates: the cell models' files, the probe and MEArec's settings."""
        return keys.settings_hash(xc.CODE_VERSION, sorted((m.name, cells.model_hash(m)) for m in models_), probe,
                                    self.templates_per_cell, self.sim_time_s, self.rotation, self.seed,
                                    self.min_amp_uv)

    def recording_key(self, templates_key: str | None, rate: str) -> str:
        """Key of one rate's recording and analyzer: the templates' key and the recording settings."""
        return keys.settings_hash(templates_key, rate, self.units_per_cell, self.duration_s, self.noise_uv,
                                    self.min_amp_uv, self.max_amp_uv, self.min_dist_um, self.seed)


def _folder(settings: SimulationSettings):
    return settings.data_path / "crosscheck"


def stored_key(path) -> str | None:
    """The key in an artefact's ``.json`` sidecar (None if absent or unreadable)."""
    try:
        return json.loads(path.read_text()).get("key")
    except (OSError, ValueError):
        return None


def _paper_models(context, settings: SimulationSettings) -> list[cells.CellModel]:
    names = paper_cells(settings, context.instance.get_dynamic_partitions("cell_model"))
    found, _ = settings.scan_models()
    return [found[n] if n in found else settings.cell_model(n) for n in names]


@dg.asset(group_name="crosscheck", deps=[cell_model, "crosscheck_settings"], kinds={"neuron", "hdf5"}, code_version=xc.CODE_VERSION,
          pool="neuron", op_tags=k8s_op_tags("neuron"), retry_policy=TRANSIENT_RETRY)
@fail_fast
def mearec_templates(context: dg.AssetExecutionContext, settings: SimulationSettings,
                     crosscheck_settings: CrosscheckSettings) -> dg.MaterializeResult:
    """MEArec's own templates of every BBP cell model (MEArec 1.11's per-cell code path, its own seed),
    in MEArec's format: ``crosscheck/templates.h5``. Reused while the models and settings are unchanged."""
    models_ = _paper_models(context, settings)
    key = crosscheck_settings.key(models_, settings.probe)
    path = _folder(settings) / "templates.h5"
    computed = stored_key(path.with_suffix(".json")) != key or not path.exists() or settings.force
    if computed:
        xc.mearec_templates(models_, path, crosscheck_settings.templates_per_cell, probe=settings.probe,
                            rotation=crosscheck_settings.rotation, seed=crosscheck_settings.seed,
                            sim_time_s=crosscheck_settings.sim_time_s, min_amp=crosscheck_settings.min_amp_uv,
                            log=context.log.info, n_jobs=1)
        atomic_write_text(path.with_suffix(".json"), json.dumps({"key": key}))
    generator = xc.load_templates(path)
    amplitudes = xc.template_amplitudes(np.asarray(generator.templates))
    per_cell = pd.DataFrame({"cell": np.asarray(generator.celltypes).astype(str), "amplitude (µV)": amplitudes})
    table = per_cell.groupby("cell")["amplitude (µV)"].describe()[["count", "min", "50%", "max"]].round(1)
    return dg.MaterializeResult(metadata={
        "templates": len(per_cell), "cells": per_cell["cell"].nunique(), "path": dg.MetadataValue.path(str(path)),
        "amplitude per cell": markdown_table(table.reset_index()), **key_metadata(key, computed)},
        data_version=dg.DataVersion(key))


def recording_paths(settings: SimulationSettings, rate: str):
    folder = _folder(settings) / rate
    return folder / "recording.h5", folder / "analyzer", folder / "truth.parquet"


@dg.asset(partitions_def=rate_partitions, group_name="crosscheck", deps=[mearec_templates, "crosscheck_settings"],
          kinds={"hdf5"},
          code_version=xc.CODE_VERSION, op_tags=k8s_op_tags("tables"), retry_policy=TRANSIENT_RETRY)
@fail_fast
def mearec_recording(context: dg.AssetExecutionContext, settings: SimulationSettings,
                     crosscheck_settings: CrosscheckSettings) -> dg.MaterializeResult:
    """A MEArec recording with ``units_per_cell`` units of every cell model at this sampling rate (MEArec's
    noise, spike trains and 300-6000 Hz band-pass), and a SpikeInterface ``SortingAnalyzer`` of its
    ground-truth units (``read_mearec``; ``random_spikes``, ``templates``, ``noise_levels``)."""
    rate = context.partition_key
    c = crosscheck_settings
    recording, analyzer_folder, truth_path = recording_paths(settings, rate)
    templates = _folder(settings) / "templates.h5"
    key = c.recording_key(stored_key(templates.with_suffix(".json")), rate)
    computed = stored_key(recording.with_suffix(".json")) != key or not analyzer_folder.exists() or settings.force
    if computed:
        template_rate = 1000.0 / float(xc.load_templates(templates).info["params"]["dt"])
        fs = None if float(rate) == template_rate else float(rate)
        xc.mearec_recording(templates, recording, fs_hz=fs, duration_s=c.duration_s, noise_uv=c.noise_uv,
                            seed=c.seed, per_cell=c.units_per_cell, min_amp=c.min_amp_uv, max_amp=c.max_amp_uv,
                            min_dist=c.min_dist_um, log=context.log.info)
        _, truth = xc.build_analyzer(recording, analyzer_folder, seed=c.seed)
        with atomic_path(truth_path) as tmp:
            truth.to_parquet(tmp, index=False)
        atomic_write_text(recording.with_suffix(".json"), json.dumps({"key": key}))
    truth = pd.read_parquet(truth_path)
    counts = truth.groupby("cell").agg(units=("unit_id", "size"), spikes=("n_spikes", "median"),
                                       amplitude=("amplitude_uv", "median")).round(1).reset_index()
    return dg.MaterializeResult(metadata={
        "units": len(truth), "sampling rate (Hz)": float(rate), "duration (s)": c.duration_s,
        "noise (µV)": c.noise_uv, "analyzer": dg.MetadataValue.path(str(analyzer_folder)),
        "units per cell": markdown_table(counts), **key_metadata(key, computed)}, data_version=dg.DataVersion(key))


def result_path(settings: SimulationSettings, rate: str):
    return _folder(settings) / rate / "result.json"


@dg.asset(partitions_def=rate_partitions, group_name="crosscheck",
          deps=[mearec_recording, dg.AssetDep(unit_classifier, partition_mapping=dg.AllPartitionMapping()),
                "crosscheck_settings"],
          kinds={"mlflow"}, code_version="crosscheck-score-3", op_tags=k8s_op_tags("tensorflow"),
          retry_policy=TRANSIENT_RETRY)
@fail_fast
def crosscheck(context: dg.AssetExecutionContext, settings: SimulationSettings,
               crosscheck_settings: CrosscheckSettings, mlflow_tracking: MLflowTracking) -> dg.MaterializeResult:
    """Every ground-truth unit of the rate's MEArec analyzer classified by the champions
    (``eap_assets.classify``), scored per cell type against the truth, with the calibration of the
    confidences (ECE, reliability diagram), abstention and OOD rates."""
    import mlflow

    from eap_assets.serving import classify

    rate = context.partition_key
    _, analyzer_folder, truth_path = recording_paths(settings, rate)
    truth = pd.read_parquet(truth_path)
    answers = classify(analyzer_folder, rotation=crosscheck_settings.rotation, tracking_uri=mlflow_tracking.uri(settings),
                       write_properties=True, log=context.log.info)
    by_unit = truth.set_index(truth["unit_id"].astype(str))
    for column, name in (("cell", "cell"), ("mtype", "mtype"), ("ei", "ei"), ("soma_x", "soma_x_um"),
                         ("amplitude_uv", "mearec_amplitude_uv")):
        answers[name] = by_unit[column].reindex(answers["unit_id"].astype(str)).to_numpy()
    ei_of = {m: ("E" if m in cells.EXCITATORY_MTYPES else "I") for m in set(truth["mtype"])}
    folder = _folder(settings) / rate
    with atomic_path(folder / "answers.parquet") as tmp:
        answers.to_parquet(tmp, index=False)
    results, figures = {}, {}
    for task in models.TASKS:
        if f"{task}_predicted" not in answers:
            continue
        score = score_answers(answers, task, answers["mtype"].to_numpy(), ei_of)
        model, version = str(answers[f"{task}_model"].iloc[0]), str(answers[f"{task}_version"].iloc[0])
        own = registry.classifier_report(model, version)  # the served version's own test split
        score.update(model=model, version=version,
                     own_test={"accuracy": 100 * own["test"]["accuracy"], "summary": own["test"]["summary"],
                               "ece": own["test"]["ece_after"], "kind": own["kind"]})
        results[task] = score
        confusion = pd.DataFrame(score["evaluation"]["confusion"]).T
        figures.update(figure_metadata(plots.confusion_matrix_figure(confusion, f"MEArec {rate} Hz, {task}"),
                                       folder / f"{task}_confusion.png", f"confusion {task}"))
        table = pd.DataFrame(score["reliability"])
        figures.update(figure_metadata(plots.reliability_figure({"calibrated": table},
                                                                f"MEArec {rate} Hz, {task}: reliability"),
                                       folder / f"{task}_reliability.png", f"reliability {task}"))
    record = {"rate_hz": float(rate), "units": len(answers), "settings": crosscheck_settings.model_dump(),
              "results": results}
    with atomic_path(result_path(settings, rate)) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=float))
    with mlflow_tracking.run(context, settings, f"crosscheck {rate} Hz"):
        mlflow.log_dict(record, "crosscheck.json")
        for task, score in results.items():
            mlflow.log_metrics({f"{task}_accuracy": score["evaluation"]["accuracy"],
                                f"{task}_mean_over_types": score["evaluation"]["summary"]["mean"],
                                f"{task}_ece": score["ece"], f"{task}_coverage": score["coverage"]})
            for png in (f"{task}_confusion.png", f"{task}_reliability.png"):
                mlflow.log_artifact(str(folder / png))
    per_type = pd.DataFrame({task: {ct: v["accuracy"] for ct, v in s["evaluation"]["per_cell_type"].items()}
                             for task, s in results.items()}).round(2).reset_index(names="cell type")
    return dg.MaterializeResult(metadata={
        "units": len(answers), **{f"{t} accuracy (%)": round(s["evaluation"]["accuracy"], 2) for t, s in results.items()},
        **{f"{t} mean over cell types (%)": round(s["evaluation"]["summary"]["mean"], 2) for t, s in results.items()},
        **{f"{t} ECE": round(s["ece"], 4) for t, s in results.items()},
        "per cell type (%)": markdown_table(per_type), "path": dg.MetadataValue.path(str(result_path(settings, rate))),
        **figures})


@dg.asset(group_name="crosscheck", deps=[crosscheck], kinds={"markdown"}, code_version="crosscheck-report-5",
          op_tags=k8s_op_tags("tables"), retry_policy=TRANSIENT_RETRY)
@fail_fast
def crosscheck_report(context: dg.AssetExecutionContext, settings: SimulationSettings,
                      crosscheck_settings: CrosscheckSettings) -> dg.MaterializeResult:
    """The cross-simulator check of every sampling rate beside the classifiers' own test split, and the
    targets (binary >= 98 %, m-type mean >= 90 %, each within 3 pp of the own test split, ECE <= 0.05):
    ``reports/crosscheck.md`` + ``.csv``."""
    results = {rate: json.loads(result_path(settings, rate).read_text())
               for rate in rate_partitions.get_partition_keys() if result_path(settings, rate).exists()}
    if not results:
        raise FileNotFoundError(f"no cross-check results under {_folder(settings)}; materialise `crosscheck` first")
    markdown, frame = crosscheck_markdown(results, crosscheck_settings.model_dump())
    folder = settings.data_path / "reports"
    with atomic_path(folder / "crosscheck.md") as tmp:
        tmp.write_text(markdown)
    with atomic_path(folder / "crosscheck.csv") as tmp:
        frame.to_csv(tmp, index=False)
    return dg.MaterializeResult(metadata={"report": dg.MetadataValue.md(markdown),
                                          "path": dg.MetadataValue.path(str(folder / "crosscheck.md"))})
