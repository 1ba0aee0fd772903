"""LightGBM recipe: trees grown on every feature vs on a seeded half (``TrainingSettings.lgbm_feature_fraction``).

Fits the LightGBM models of a paper-scale ``make run`` twice, with ``feature_fraction`` 1.0 (the recipe before)
and 0.5 (the pipeline's), everything else the pipeline's: the ``lgbm`` and ``waveform`` kinds, binary and m-type,
of the paper family (``training_table/<rotation>.parquet`` and the EAP datasets, as ``lgbm_model`` /
``waveform_model`` train) and of the models for real recordings (``recording_training_set/<rotation>.parquet`` and
``waveform_basis``, as ``recording_lgbm_model`` / ``recording_waveform_model`` train), with the seeds those
assets use. One thread per fit, the two recipes of a model in two processes at once (one per core, as
``make run`` trains). Reported per fit: wall seconds, rounds, the best round, and the test accuracy
(binary: over the test rows; m-type: plain and mean over cell types).

Usage::

    .venv/bin/python bench/bench_lgbm_recipe.py --data-dir data              # ~20 min on 2 idle cores
    .venv/bin/python bench/bench_lgbm_recipe.py --data-dir data --families paper
"""

from __future__ import annotations

import benchlib

import argparse  # noqa: E402
import json  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from multiprocessing import get_context  # noqa: E402
from pathlib import Path  # noqa: E402

FAMILIES = ("paper", "recording")
KINDS = ("lgbm", "waveform")
TASKS = ("binary", "mtype")
FRACTIONS = (1.0, 0.5)


def fit(data_dir: str, family: str, kind: str, rotation: str, task: str, fraction: float) -> dict:
    """One fit of ``kind`` for ``family`` x ``rotation`` x ``task`` with LightGBM's ``feature_fraction``."""
    import time

    import numpy as np
    import pandas as pd

    from eap_assets.core import evaluation, models
    from eap_assets.core.recording_set import table_proba
    from eap_assets.defs import recording, training
    from eap_assets.defs.resources import RecordingSettings, SimulationSettings

    settings = SimulationSettings(data_dir=data_dir)
    pipeline = training.TrainingSettings()
    recipe = pipeline.model_copy(update={"lgbm_feature_fraction": fraction})
    start = time.perf_counter()
    if family == "paper":
        table = pd.read_parquet(settings.data_path / "training_table" / f"{rotation}.parquet")
        y, classes = models.task_labels(table, task)
        split = table["split"].to_numpy()
        train, val, test = split == "train", split == "validation", split == "test"
        seed = training._seed(settings, kind, rotation, task)
        inputs = training.ModelInputs(kind, settings, rotation, table)
        if kind == "lgbm":
            trained = models.train_lgbm(inputs.map(train), y[train], inputs.map(val), y[val], len(classes),
                                        recipe.lgbm_config(), seed, classes)
        else:
            trained = training._fit_waveform(inputs, y, train, val, len(classes), recipe.waveform_config(), seed,
                                             classes, log=lambda message: None)
        proba = inputs.map(test, trained.predict_proba)
    else:
        table = pd.read_parquet(settings.data_path / "recording_training_set" / f"{rotation}.parquet")
        basis = dict(np.load(settings.data_path / "waveform_basis" / f"{rotation}.npz"))
        spec = RecordingSettings().spec(settings)
        y, classes = models.task_labels(table, task)
        split = table["split"].to_numpy()
        test = split == "test"
        seed = training._seed(settings, "recording", kind, rotation, task)
        trained, classes = recording._train(kind, table, basis, task, spec, recipe, seed, on_step=None)
        proba = table_proba(kind, trained.model, table[test], spec, classes)
    seconds = time.perf_counter() - start
    y_test = y[test]
    pred = np.asarray(proba).argmax(axis=1)
    row = {"family": family, "kind": kind, "rotation": rotation, "task": task, "feature_fraction": fraction,
           "train_rows": int((split == "train").sum()), "fit_s": round(trained.seconds, 1),
           "total_s": round(seconds, 1), "rounds": trained.steps_run, "best_round": trained.best_step,
           "test_accuracy": round(100.0 * float((pred == y_test).mean()), 2)}
    if task == "mtype":
        cell_types = table["mtype"].to_numpy()[test]
        row["test_mean_over_types"] = round(evaluation.evaluate(y_test, pred, classes, cell_types).summary["mean"], 2)
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=benchlib.DATA_DIR,
                        help="data directory of a paper-scale make run")
    parser.add_argument("--rotation", default="3drot")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    args = parser.parse_args(argv)
    data_dir = str(args.data_dir.resolve())
    load_start = benchlib.loadavg()
    jobs = [(data_dir, family, kind, args.rotation, task)
            for family in args.families for kind in KINDS for task in TASKS]
    rows = []
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        for job in jobs:  # the two recipes of one model at once, one per core
            rows += list(pool.map(fit, *zip(*[(*job, fraction) for fraction in FRACTIONS])))
    result = {"rotation": args.rotation, "fits": rows, "load_avg_start": load_start, "load_avg_end": benchlib.loadavg()}
    print(f"written {benchlib.save_result('lgbm_recipe', result)}")
    return result


if __name__ == "__main__":
    main()
