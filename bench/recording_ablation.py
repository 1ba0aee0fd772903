"""Which part of "looks like a recording" matters: the recording recipe with one ingredient taken out at a time,
scored on the models' own test split and on a MEArec recording's SortingAnalyzer (data we did not simulate).

Variants (each a training set built by :func:`eap_assets.core.recording_set.build_recording_set` from the
paper-scale recording EAP datasets of one rotation, then LightGBM and the waveform model trained on it with
the pipeline's settings):

* ``full`` -- the default recipe (MEA-plane medium, somata x in [10, 100] µm and 30 µm beyond the probe,
  band-pass 300-6000 Hz with filter orders 2-5, template noise, re-alignment with +-1 sample jitter);
* ``no_bandpass`` -- trained on unfiltered EAPs (the spec without a band: a recording's filtered
  templates are then fed as they are);
* ``infinite_medium`` -- the EAPs halved: the paper's infinite medium instead of the MEA plane;
* ``paper_box`` -- only somata in the paper's box (x <= 60 µm, |y|, |z| <= 75 µm);
* ``no_noise`` -- no template noise;
* ``no_jitter`` -- no alignment jitter, one filter order (3).

Usage (after ``make run RUN_ARGS=`` and ``make crosscheck`` in the same data directory)::

    .venv/bin/python bench/recording_ablation.py --data-dir data [--rotation 3drot] [--rate 32000]
        [--variants full,no_bandpass,...] [--kinds lgbm,waveform]

With ``--hold-out ChC,STPC,UTPC``: instead, E/I of each of those cell types by a model trained on the other
types (the ``hold_out_type`` protocol of :func:`eap_assets.core.generalisation.run_recording_generalisation`, each
cell's first ``--eaps-per-cell`` EAPs) under each variant: which ingredient costs the held-out types their E/I
(``bench/results/recording_ablation_hold_out.json``).

Writes ``bench/results/recording_ablation.json`` and prints a Markdown table (appended to docs/results.md
by hand is not allowed: ``--markdown PATH`` writes the table for ``make results-doc`` to pick up).
"""

from __future__ import annotations

import benchlib  # noqa: F401  (first: limits BLAS threads)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from eap_assets.core import models  # noqa: E402
from eap_assets.core.classifier import UnitClassifier  # noqa: E402
from eap_assets.core.evaluation import evaluate  # noqa: E402
from eap_assets.core.pool import EAPPool  # noqa: E402
from eap_assets.core.probe import match_contacts  # noqa: E402
from eap_assets.core.recording import RecordingSpec, to_model_input  # noqa: E402
from eap_assets.core.recording_set import build_recording_set, table_input  # noqa: E402
from eap_assets.core.units import read_units  # noqa: E402
from eap_assets.core.waveform import fit_waveform_classifier  # noqa: E402

VARIANTS = ("full", "no_bandpass", "infinite_medium", "paper_box", "no_noise", "no_jitter")
#: Recipes beside the ablations: no augmentation at all, and other priors of the template noise.
EXTRA = ("clean", "spikes_50_1000", "spikes_100_1000")


def variant(name: str, pool: EAPPool, config):
    """(pool, config) of a variant."""
    if name == "no_bandpass":
        return pool, replace(config, spec=replace(config.spec, band_hz=None))
    if name == "no_noise":
        return pool, replace(config, augmentation=replace(config.augmentation, noise_rms_uv=(0.0, 0.0)))
    if name == "no_jitter":
        return pool, replace(config, augmentation=replace(config.augmentation, jitter_samples=0, filter_orders=(3,)))
    if name == "clean":
        return pool, replace(config, augmentation=replace(config.augmentation, copies=1, noise_rms_uv=(0.0, 0.0),
                                                          jitter_samples=0, filter_orders=(3,)))
    if name.startswith("spikes_"):
        low, high = (float(v) for v in name.split("_")[1:])
        return pool, replace(config, augmentation=replace(config.augmentation, spikes_per_template=(low, high)))
    if name in ("infinite_medium", "paper_box"):
        datasets = []
        for d in pool.datasets.values():
            if name == "infinite_medium":
                datasets.append(replace(d, eaps=np.asarray(d.eaps) * np.float32(0.5)))
            else:
                keep = np.flatnonzero((d.positions[:, 0] <= 60) & (np.abs(d.positions[:, 1:]) <= 75).all(axis=1))
                datasets.append(replace(d, eaps=np.asarray(d.eaps)[keep], positions=d.positions[keep],
                                        rotations=d.rotations[keep], spike_index=d.spike_index[keep],
                                        candidate_index=d.candidate_index[keep]))
        labels = {c: tuple(pool.index.loc[pool.index["cell"] == c, ["parent", "mtype", "excitatory"]].iloc[0])
                  for c in pool.datasets}
        return EAPPool(datasets, labels), config
    return pool, config


def fit(kind: str, table: pd.DataFrame, basis, task: str, spec: RecordingSpec, training, seed: int):
    y, classes = models.task_labels(table, task)
    split = table["split"].to_numpy()
    train, val = split == "train", split == "validation"
    x = table_input(kind, table, spec)
    if kind == "lgbm":
        return models.train_lgbm(x[train], y[train], x[val], y[val], len(classes), training.lgbm_config(), seed,
                                 classes).model, classes
    basis.config = replace(basis.config, lgbm=training.lgbm_config())
    return fit_waveform_classifier(basis, x[train], y[train], x[val], y[val], len(classes), seed, classes).model, classes


def hold_out(args: argparse.Namespace, pool: EAPPool, base, training) -> dict:
    """E/I of each ``--hold-out`` type by a model trained on the other types, under each variant."""
    from eap_assets.core import generalisation as gen

    config = gen.RecordingGeneralisationConfig(protocols=("hold_out_type",), kinds=tuple(args.kinds.split(",")),
                                               max_eaps_per_cell=args.eaps_per_cell,
                                               held_out=tuple(args.hold_out.split(",")))
    rows = []
    for name in args.variants.split(","):
        start = time.perf_counter()
        vpool, set_config = variant(name, pool, base)
        result = gen.run_recording_generalisation(vpool, "binary", set_config, config, training.cnn_config(),
                                                  training.lgbm_config(), log=lambda m: None)
        for row in result["rows"]:
            rows.append({"variant": name, "kind": row["kind"], "held_type": row["held_type"],
                         "accuracy": row["accuracy"], "n_test": row["n_test"],
                         "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps(rows[-1]), flush=True)
    result = {"rotation": args.rotation, "eaps_per_cell": args.eaps_per_cell, "rows": rows}
    print(f"written {benchlib.save_result('recording_ablation_hold_out', result)}")
    table = pd.DataFrame(rows).pivot_table(index="variant", columns=["kind", "held_type"], values="accuracy").round(2)
    print(table.to_markdown() if hasattr(table, "to_markdown") else table.to_string())
    return result


def main(argv: list[str] | None = None) -> dict:
    from eap_assets.defs.eaps import load_pool
    from eap_assets.defs.features import paper_cells
    from eap_assets.defs.resources import RecordingSettings, SimulationSettings
    from eap_assets.defs.training import TrainingSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--rotation", default="3drot")
    parser.add_argument("--rate", default="32000")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--kinds", default="lgbm,waveform")
    parser.add_argument("--markdown", default=None, help="also write the Markdown table here")
    parser.add_argument("--threads", type=int, default=1, help="LightGBM threads (default 1, as the pipeline)")
    parser.add_argument("--tasks", default="binary,mtype")
    parser.add_argument("--hold-out", default="", help="cell types: E/I of each held out, per variant (see above)")
    parser.add_argument("--eaps-per-cell", type=int, default=3000, help="--hold-out: each cell's first N EAPs")
    args = parser.parse_args(argv)
    settings, recording = SimulationSettings(data_dir=args.data_dir), RecordingSettings()
    training = TrainingSettings(threads=args.threads)
    found, _ = settings.scan_models()
    pool = load_pool(settings, args.rotation, paper_cells(settings, list(found)), family="recording", recording=recording)
    base = recording.set_config(settings)
    if args.hold_out:
        return hold_out(args, pool, base, training)
    analyzer = Path(args.data_dir) / "crosscheck" / args.rate / "analyzer"
    truth = pd.read_parquet(analyzer.parent / "truth.parquet").set_index("unit_id")
    units = read_units(analyzer)
    order = match_contacts(units.positions, base.spec.probe)
    mtypes = truth.loc[[str(u) for u in units.unit_ids], "mtype"].to_numpy()
    rows = []
    for name in args.variants.split(","):
        start = time.perf_counter()
        vpool, config = variant(name, pool, base)
        table, basis, summary = build_recording_set(vpool, config)
        windows, _ = to_model_input(units.templates[:, order], units.fs_hz, config.spec, units.filtered)
        for kind in args.kinds.split(","):
            for task in args.tasks.split(","):
                model, classes = fit(kind, table, basis, task, config.spec, training, seed=0)
                y, _ = models.task_labels(table, task)
                test = (table["split"] == "test").to_numpy()
                from eap_assets.core.recording_set import table_proba

                own = evaluate(y[test], table_proba(kind, model, table[test], config.spec, classes).argmax(1), classes,
                               table.loc[test, "mtype"].to_numpy())
                served = UnitClassifier(kind=kind, task=task, model=model, classes=classes, spec=config.spec)
                truth_labels = np.array(["E" if m in ("STPC", "TTPC1", "TTPC2", "UTPC") else "I" for m in mtypes]) \
                    if task == "binary" else mtypes
                index = {c: i for i, c in enumerate(classes)}
                known = np.isin(truth_labels, classes)
                pred = served.predict_proba(windows[known]).argmax(1)
                ext = evaluate(np.array([index[t] for t in truth_labels[known]]), pred, classes, mtypes[known])
                rows.append({"variant": name, "kind": kind, "task": task, "own_accuracy": own.accuracy,
                             "own_mean_over_types": own.summary["mean"], "mearec_accuracy": ext.accuracy,
                             "mearec_mean_over_types": ext.summary["mean"], "rows": len(table),
                             "seconds": round(time.perf_counter() - start, 1)})
                print(json.dumps(rows[-1]), flush=True)
    frame = pd.DataFrame(rows)
    result = {"rotation": args.rotation, "rate": args.rate, "units": int(len(units.unit_ids)), "rows": rows}
    print(f"written {benchlib.save_result('recording_ablation', result)}")
    table = frame.pivot_table(index="variant", columns=["task", "kind"],
                              values=["own_mean_over_types", "mearec_mean_over_types"]).round(2)
    text = table.to_markdown() if hasattr(table, "to_markdown") else table.to_string()
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
