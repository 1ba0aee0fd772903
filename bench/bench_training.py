"""Training benchmarks on the paper-scale training tables (``<data>/training_table/<rotation>.parquet``, data:
``benchlib.DATA_DIR``).

1. CNN milliseconds per optimiser step at the paper's batch of 1000 and at the pipeline's batch,
   with 1 and 2 TensorFlow threads (one process per setting: TF fixes its threads at start-up);
   median of 3 timed runs of ``--steps`` steps after a warm-up run (model build, tracing).
2. Time to reach the paper's accuracy: the pipeline's CNN recipe (``TrainingSettings()``) on the
   m-type task of each rotation, two trainings at a time (as ``make run`` runs them). After every
   validation evaluation the test set is scored *for this report only* (selection and early
   stopping use the validation split): the first time the mean accuracy over cell types is within
   3 pp of the paper's (Table III), the first time it reaches the paper's, and the final result.
3. LightGBM fit time (one thread) and test score, binary and m-type: the pipeline's settings (median
   of 3) and the settings before them (LightGBM's 255 bins, learning rate 0.05; one run).

Usage::

    .venv/bin/python bench/bench_training.py                    # ~15 min on 2 idle cores
    .venv/bin/python bench/bench_training.py --rotations 3drot  # a subset
"""

from __future__ import annotations

import benchlib

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from multiprocessing import get_context  # noqa: E402

TABLES = benchlib.DATA_DIR / "training_table"
ROTATIONS = ("norot", "zrot", "xrot", "3drot")


def _arrays(rotation: str, task: str, kind: str):
    import pandas as pd

    from eap_assets import registry
    from eap_assets.core import models

    path = TABLES / f"{rotation}.parquet"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `make run RUN_ARGS=` (paper scale) first")
    table = pd.read_parquet(path)
    y, classes = models.task_labels(table, task)
    x = registry.model_input(kind, table, "SqMEA-10-15")
    split = table["split"].to_numpy()
    return x, y, classes, split, table["mtype"].to_numpy()


def step_time(batch: int, threads: int, steps: int, repeats: int = 3) -> dict:
    """CNN ms per step (this process; call in a fresh process per ``threads``)."""
    from eap_assets.core import models

    x, y, classes, split, _ = _arrays("3drot", "mtype", "cnn")
    train = split == "train"

    def run(n: int) -> float:
        config = models.CNNConfig(steps=n, batch_size=batch, eval_every=n, threads=threads)
        return models.train_cnn(x[train], y[train], None, None, len(classes), config, seed=1).seconds

    run(5)  # warm-up: TF start-up
    times = []
    for _ in range(repeats):
        short, long = run(5), run(5 + steps)
        times.append((long - short) / steps)
    ms = 1000 * benchlib.median(times)
    return {"batch": batch, "threads": threads, "steps_timed": steps, "ms_per_step": round(ms, 1),
            "samples_per_s": round(1000 * batch / ms), "runs_ms": [round(1000 * t, 1) for t in times]}


def time_to_accuracy(rotation: str) -> dict:
    """The pipeline's CNN recipe on one rotation's m-type task, test accuracy after every evaluation."""
    from dataclasses import asdict

    from eap_assets.core import evaluation, models, paper
    from eap_assets.defs.training import TrainingSettings

    task = "mtype"
    x, y, classes, split, cell_types = _arrays(rotation, task, "cnn")
    train, val, test = split == "train", split == "validation", split == "test"
    reference = paper.paper_mtype_summary(rotation)["mean"]
    config = TrainingSettings().cnn_config()
    curve: list[dict] = []
    start = time.perf_counter()

    def monitor(step: int, model, metrics: dict) -> None:
        pred = model.predict(x[test], batch_size=4096, verbose=0).argmax(axis=1)
        score = evaluation.evaluate(y[test], pred, classes, cell_types[test]).summary["mean"]
        curve.append({"step": step, "seconds": round(time.perf_counter() - start, 1), "test_mean": round(score, 2),
                      "val_accuracy": round(100 * metrics["val_accuracy"], 2)})

    trained = models.train_cnn(x[train], y[train], x[val], y[val], len(classes), config, seed=1,
                               classes=classes, monitor=monitor)
    pred = trained.predict(x[test])
    final = evaluation.evaluate(y[test], pred, classes, cell_types[test]).summary["mean"]

    def first(threshold: float) -> dict | None:
        hit = next((c for c in curve if c["test_mean"] >= threshold), None)
        return {"step": hit["step"], "seconds": hit["seconds"]} if hit else None

    return {"rotation": rotation, "task": task, "paper_mean": reference, "recipe": asdict(config),
            "final_test_mean": round(final, 2), "steps_run": trained.steps_run,
        "best_step": trained.best_step, "train_seconds": round(trained.seconds, 1),
        "reached_paper_minus_3pp": first(reference - 3.0), "reached_paper": first(reference), "curve": curve}


#: LightGBM settings before the pipeline's recipe (LightGBM's 255 bins, learning rate 0.05, patience 50).
LGBM_BEFORE = {"learning_rate": 0.05, "max_bin": 255, "early_stopping_rounds": 50}


def lgbm_fit(rotation: str, task: str, label: str, repeats: int) -> dict:
    """Fit time (median of ``repeats``) and test accuracy of LightGBM with the pipeline's settings
    (``label="pipeline"``) or :data:`LGBM_BEFORE` (``label="before"``)."""
    from dataclasses import asdict, replace

    from eap_assets.core import evaluation, models
    from eap_assets.defs.training import TrainingSettings

    x, y, classes, split, cell_types = _arrays(rotation, task, "lgbm")
    train, val, test = split == "train", split == "validation", split == "test"
    config = TrainingSettings().lgbm_config()
    if label == "before":
        config = replace(config, **LGBM_BEFORE)
    walls, cpus = [], []
    for _ in range(repeats):
        cpu = time.process_time()
        trained = models.train_lgbm(x[train], y[train], x[val], y[val], len(classes), config, seed=1)
        walls.append(trained.seconds)
        cpus.append(time.process_time() - cpu)
    result = evaluation.evaluate(y[test], trained.predict(x[test]), classes, cell_types[test])
    score = result.accuracy if task == "binary" else result.summary["mean"]
    return {"rotation": rotation, "task": task, "settings": label, "rows": int(train.sum()),
            "features": int(x.shape[1]), "rounds": trained.steps_run, "repeats": repeats,
            "wall_s": round(benchlib.median(walls), 1), "cpu_s": round(benchlib.median(cpus), 1),
            "test_score": round(score, 2), "config": asdict(config)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rotations", nargs="+", default=list(ROTATIONS), choices=ROTATIONS)
    parser.add_argument("--steps", type=int, default=20, help="timed CNN steps per run")
    parser.add_argument("--child", nargs=3, metavar=("BATCH", "THREADS", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one step-time measurement in its own process
        print(json.dumps(step_time(*(int(v) for v in args.child))))
        return {}

    from eap_assets.defs.training import TrainingSettings

    load_start = benchlib.loadavg()
    pipeline_batch = TrainingSettings().cnn_batch_size
    steps = []
    for batch in sorted({1000, pipeline_batch}, reverse=True):
        for threads in (1, 2):
            out = subprocess.run([sys.executable, __file__, "--child", str(batch), str(threads), str(args.steps)],
                                 check=True, capture_output=True, text=True).stdout
            steps.append(json.loads(out.strip().splitlines()[-1]))
            print(steps[-1], flush=True)
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        curves = list(pool.map(time_to_accuracy, args.rotations))
    for c in curves:
        print({k: v for k, v in c.items() if k != "curve"}, flush=True)
    fits = [lgbm_fit(args.rotations[-1], task, label, 3 if label == "pipeline" else 1)
            for label in ("pipeline", "before") for task in ("binary", "mtype")]
    for f in fits:
        print(f, flush=True)
    result = {"cnn_step_time": steps, "time_to_accuracy": curves, "lgbm_fit": fits,
              "load_avg_start": load_start, "load_avg_end": benchlib.loadavg()}
    print(f"written {benchlib.save_result('training', result)}")
    return result


if __name__ == "__main__":
    main()
