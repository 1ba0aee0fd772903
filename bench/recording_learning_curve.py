"""Learning curve of the waveform model for real recordings: test accuracy against the number of distinct
training EAPs per cell.

Reads a ``recording_training_set`` (``<data>/recording_training_set/<rotation>.parquet``, written by ``make run``),
keeps a seeded share of the training split's distinct EAPs (with both augmented copies of each), trains the waveform
kind's classifier on them (LightGBM on the stored amplitude/width features and waveform projections, with the
LightGBM recipe of ``make run``, two threads) and scores it on the whole validation and test splits. The waveform
basis is the stored one (fitted on the whole training split: unsupervised, no labels). Accuracy that still climbs
at the full share says that more simulated EAPs per cell (``make run --recording-eaps-factor``) would help.

Usage (after ``make run`` in ``--data-dir``)::

    .venv/bin/python bench/recording_learning_curve.py [--data-dir data] [--rotation 3drot] [--task mtype]
        [--fractions 0.25,0.5,1]
"""

from __future__ import annotations

import benchlib

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    import numpy as np
    import pandas as pd

    from eap_assets.core import models
    from eap_assets.core.evaluation import evaluate
    from eap_assets.core.recording_set import table_input
    from eap_assets.defs.resources import RecordingSettings, SimulationSettings
    from eap_assets.defs.training import TrainingSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--rotation", default="3drot")
    parser.add_argument("--task", default="mtype", choices=models.TASKS)
    parser.add_argument("--fractions", default="0.25,0.5,1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = Path(args.data_dir).resolve()
    path = data / "recording_training_set" / f"{args.rotation}.parquet"
    if not path.exists():
        raise SystemExit(f"{path} missing: run `make run` (with --data-dir {data}) first")
    spec = RecordingSettings().spec(SimulationSettings(data_dir=str(data)))
    table = pd.read_parquet(path)
    split = table["split"].to_numpy()
    train, val, test = split == "train", split == "validation", split == "test"
    x = table_input("waveform", table, spec)
    y, classes = models.task_labels(table, args.task)
    config = replace(TrainingSettings().lgbm_config(), threads=2)
    eap = (table["cell"].astype(str) + ":" + table["eap_id"].astype(str)).to_numpy()
    distinct = np.unique(eap[train])
    cells = table.loc[train, "cell"].nunique()
    rng = np.random.default_rng(args.seed)
    rows = []
    for fraction in sorted(float(f) for f in args.fractions.split(",")):
        keep = train if fraction >= 1 else train & np.isin(
            eap, rng.choice(distinct, int(round(fraction * len(distinct))), replace=False))
        start = time.perf_counter()
        fitted = models.train_lgbm(x[keep], y[keep], x[val], y[val], len(classes), config, args.seed, classes)
        seconds = time.perf_counter() - start
        row = {"fraction": fraction, "training_eaps_per_cell": round(len(np.unique(eap[keep])) / cells),
               "training_rows": int(keep.sum()), "rounds": int(fitted.steps_run), "fit_s": round(seconds, 1)}
        for name, mask in (("validation", val), ("test", test)):
            scored = evaluate(y[mask], fitted.predict_proba(x[mask]).argmax(axis=1), classes,
                              table.loc[mask, "mtype"].to_numpy())
            row[f"{name}_accuracy"] = round(scored.accuracy, 2)
            row[f"{name}_mean_over_types"] = round(scored.summary["mean"], 2)
        rows.append(row)
        print(row, flush=True)
    result = {"data_dir": str(data), "rotation": args.rotation, "task": args.task, "seed": args.seed,
              "training_set_rows": int(len(table)), "rows": rows}
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"written {benchlib.save_result(f'learning_curve_{args.rotation}_{args.task}', result)}")
    return result


if __name__ == "__main__":
    main()
