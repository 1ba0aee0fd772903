"""How the recording CNN should see a probe whose contacts are not a full grid: image constructions compared.

Staggered layouts (Neuropixels 1.0 sections such as ``Neuropixels-24``, ``Neuronexus-32``) are not full
grids.  Today the CNN image is the grid of the contacts' distinct coordinates and a cell without a contact
takes the mean of its contact-holding 4-neighbours (8-neighbours if those are empty):
:func:`eap_assets.core.probe.probe_grid` / :meth:`~eap_assets.core.probe.Grid.to_image`, reached through
:func:`eap_assets.core.recording_set.table_input` exactly as ``recording_cnn_model`` builds its input.  This
script trains the same CNN (the run's ``TrainingSettings.cnn_config()``: :func:`eap_assets.core.models.train_cnn`,
early stopping on the ``validation`` split) on the same ``train`` / ``validation`` / ``test`` rows of a probe
run's recording training set, with only the image construction changed:

* ``holes_filled`` -- today's image (``table_input("cnn", ...)``);
* ``holes_zero`` -- the same grid, cells without a contact left at 0 (both channels);
* ``interpolated`` -- per-contact values interpolated linearly (``scipy.interpolate.griddata``, ``linear``;
  ``nearest`` outside the contacts' convex hull) onto a regular grid over the contacts' extent, its pitch
  along each axis the smallest spacing of the distinct contact coordinates (a gap in a column becomes
  the rows it spans, e.g. Neuronexus-32's top contact);
* ``columns_collapsed`` -- distinct x positions within half the column pitch (the smallest x distance of
  two contacts on one row) merged, i.e. the staggered offsets ignored: a (rows, merged columns) image,
  used only when every cell then holds exactly one contact (otherwise the variant is skipped, saying why).

Amplitude / width per contact are the training set's ``amp_c*`` / ``width_c*`` columns (the features the
pipeline's CNN reads); every construction is a fixed linear map of them.  Per task the CNN seed is
``--seed`` for every variant (``--pipeline-seed``: the seed ``recording_cnn_model`` used, so that
``holes_filled`` on all rows with the run's recipe should repeat the registered model); ``--max-rows``
keeps a seeded share of every split.  With the run's one TensorFlow thread, the same seed gives the same
numbers.  The table (variant, image shape, task, validation / test accuracy, training time, steps) is
printed and, with ``--out``, written as Markdown with the machine and the exact command.  ``holes_zero``
runs only when asked for (``--variants``).

Cost: one training per variant x task, one after the other on one core; at paper scale (~52 000 training
rows, the run's recipe) the pipeline's CNNs early-stop after 5 000-7 000 of their 8 000 steps at 20-30 ms
a step, i.e. ~2-4 min each (~15-25 min for 3 variants x 2 tasks).

Data: ``DATA_DIR/recording_training_set/<rotation>.parquet`` (the ``recording_training_set`` asset's
Parquet file); the probe, input spec and training recipe come from the run's settings file
(``DATA_DIR/.dagster_home/eap_assets_settings.json`` as ``make probes`` writes it, or ``--dagster-home``);
``--probe`` overrides the probe.

Usage::

    .venv/bin/python bench/cnn_image.py DATA_DIR [--rotation 3drot] [--tasks binary,mtype]
        [--variants holes_filled,holes_zero,interpolated,columns_collapsed] [--steps N] [--max-rows N]
        [--seed 0 | --pipeline-seed] [--out FILE.md]

    # smoke test (seconds):
    .venv/bin/python bench/cnn_image.py data/probes/Neuropixels-24 --max-rows 600 --steps 20 --out /tmp/x.md
"""

from __future__ import annotations

import benchlib  # first: limits BLAS threads

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = ("holes_filled", "holes_zero", "interpolated", "columns_collapsed")
DEFAULT_VARIANTS = ("holes_filled", "interpolated", "columns_collapsed")
#: Decimals the contact coordinates are rounded to (as :func:`eap_assets.core.probe.probe_grid`).
DECIMALS = 3
#: Coordinates closer than this are one, µm.
TOL_UM = 1e-3


class Skip(Exception):
    """A construction that does not apply to the probe (the message says why)."""


@dataclass(frozen=True)
class Layout:
    """A linear image construction: ``image = values @ weights`` reshaped to ``shape``.

    ``weights`` (n_contacts, rows * cols); None for ``holes_filled`` (the pipeline's own code builds it).
    """

    name: str
    shape: tuple[int, int]
    weights: np.ndarray | None
    note: str


# --------------------------------------------------------------------------------------------
# image constructions
# --------------------------------------------------------------------------------------------

def _plane(probe: str) -> np.ndarray:
    from eap_assets.core.probe import model_plane_positions

    return np.round(model_plane_positions(probe), DECIMALS)  # (C, 2): column axis (y), row axis (z)


def _distinct(values: np.ndarray) -> np.ndarray:
    values = np.sort(np.unique(values))
    keep = np.concatenate([[True], np.diff(values) > TOL_UM])
    return values[keep]


def _index(values: np.ndarray, distinct: np.ndarray) -> np.ndarray:
    return np.abs(values[:, None] - distinct[None, :]).argmin(axis=1)


def holes_filled(probe: str) -> Layout:
    from eap_assets.core.probe import probe_grid

    grid = probe_grid(probe)
    return Layout("holes_filled", grid.shape, None,
                  f"distinct-coordinate grid, {grid.hole_row.size} holes filled with the neighbours' mean")


def holes_zero(probe: str) -> Layout:
    from eap_assets.core.probe import probe_grid

    grid = probe_grid(probe)
    rows, cols = grid.shape
    weights = np.zeros((grid.row.size, rows * cols), dtype=np.float32)
    weights[np.arange(grid.row.size), grid.row * cols + grid.col] = 1.0
    return Layout("holes_zero", grid.shape, weights, f"distinct-coordinate grid, {grid.hole_row.size} holes at 0")


def _axis_points(values: np.ndarray) -> np.ndarray:
    """Regular points over the extent of ``values``, pitch ~ the smallest spacing of its distinct values."""
    distinct = _distinct(values)
    if distinct.size == 1:
        return distinct
    pitch = float(np.diff(distinct).min())
    n = int(round((distinct[-1] - distinct[0]) / pitch)) + 1
    return np.linspace(distinct[0], distinct[-1], n)


def interpolated(probe: str) -> Layout:
    from scipy.interpolate import griddata

    plane = _plane(probe)
    xs, zs = _axis_points(plane[:, 0]), _axis_points(plane[:, 1])
    if xs.size < 2 or zs.size < 2:
        raise Skip("the contacts are on one line: no 2-D interpolation")
    zz, xx = np.meshgrid(zs, xs, indexing="ij")  # rows along z, columns along y, row-major like the grid
    points = np.column_stack([xx.ravel(), zz.ravel()])
    identity = np.eye(len(plane))
    # linear in the values: interpolating the identity gives each contact's weight at every grid point
    weights = griddata(plane, identity, points, method="linear")  # (cells, C), NaN outside the hull
    outside = np.isnan(weights).any(axis=1)
    if outside.any():
        weights[outside] = griddata(plane, identity, points[outside], method="nearest")
    on_contact = int((np.abs(points[:, None, :] - plane[None]).max(axis=-1) < TOL_UM).any(axis=1).sum())
    note = (f"linear interpolation on {zs.size} x {xs.size} points, pitch {np.diff(zs).min():.3g} x "
            f"{np.diff(xs).min():.3g} µm; {on_contact} points on a contact, {int(outside.sum())} outside the "
            "hull (nearest)")
    return Layout("interpolated", (zs.size, xs.size), weights.T.astype(np.float32), note)


def columns_collapsed(probe: str) -> Layout:
    plane = _plane(probe)
    zs = _distinct(plane[:, 1])
    row = _index(plane[:, 1], zs)
    gaps = [np.diff(np.sort(plane[row == r, 0])).min() for r in range(zs.size) if np.count_nonzero(row == r) > 1]
    if not gaps:
        raise Skip("no row holds two contacts: no column pitch to merge by")
    half = float(min(gaps)) / 2.0
    xs = _distinct(plane[:, 0])
    merged, start = np.zeros(xs.size, dtype=int), xs[0]
    for i, x in enumerate(xs[1:], 1):  # greedy from the left: a merged column spans at most half the pitch
        if x - start <= half + TOL_UM:
            merged[i] = merged[i - 1]
        else:
            merged[i], start = merged[i - 1] + 1, x
    col = merged[_index(plane[:, 0], xs)]
    shape = (zs.size, int(merged.max()) + 1)
    cells = row * shape[1] + col
    counts = np.bincount(cells, minlength=shape[0] * shape[1])
    if counts.max() > 1 or counts.min() == 0:
        raise Skip(f"merging x positions within {half:g} µm (half the column pitch {2 * half:g} µm) makes "
                   f"{shape[0]} x {shape[1]} cells with {int((counts == 0).sum())} holes and "
                   f"{int((counts > 1).sum())} cells of several contacts: no hole-free collapsed layout")
    weights = np.zeros((len(plane), shape[0] * shape[1]), dtype=np.float32)
    weights[np.arange(len(plane)), cells] = 1.0
    groups = ", ".join("{" + ", ".join(f"{x:g}" for x in xs[merged == m]) + "}" for m in range(shape[1]))
    return Layout("columns_collapsed", shape, weights, f"x positions merged into columns {groups} µm, no holes")


BUILDERS = {"holes_filled": holes_filled, "holes_zero": holes_zero, "interpolated": interpolated,
            "columns_collapsed": columns_collapsed}


def images(layout: Layout, table: pd.DataFrame, spec) -> np.ndarray:
    """(N, rows, cols, 2) amplitude / width images of the table's rows under ``layout``."""
    from eap_assets.core.features import feature_columns
    from eap_assets.core.recording_set import table_input

    if layout.weights is None:
        return table_input("cnn", table, spec)  # the pipeline's own construction
    amp_cols, width_cols = feature_columns(layout.weights.shape[0])
    channels = [table[cols].to_numpy(np.float32) @ layout.weights for cols in (amp_cols, width_cols)]
    return np.stack(channels, axis=-1).reshape(len(table), *layout.shape, 2)


# --------------------------------------------------------------------------------------------
# the run's settings and data
# --------------------------------------------------------------------------------------------

def run_resources(data_dir: Path, home: Path | None) -> tuple[dict, Path | None]:
    """The resources (settings, training, recording) of the run that wrote ``data_dir``, and the settings file."""
    from eap_assets.defs.settings import deployment_resources
    from eap_assets.local import settings_path

    # (folder, whether its settings must name data_dir): the given folder and the data directory's own instance
    # (`make probes`) are taken as they are; $DAGSTER_HOME and ./.dagster_home (`make run`) only if they ran there
    candidates = [(home, False)] if home is not None else [
        (data_dir / ".dagster_home", False),
        *([(Path(os.environ["DAGSTER_HOME"]), True)] if os.environ.get("DAGSTER_HOME") else []),
        (Path(".dagster_home"), True)]
    for folder, must_match in candidates:
        path = settings_path(folder)
        if not path.is_file():
            continue
        resources = deployment_resources(folder)
        if not must_match or resources["settings"].data_path == data_dir.resolve():
            return resources, path
    if home is not None:
        raise SystemExit(f"{settings_path(home)} does not exist")
    return deployment_resources(data_dir / "no-such-instance"), None  # no file there: the resources' defaults


def load_table(path: Path, n_contacts: int) -> tuple[pd.DataFrame, str | None]:
    import pyarrow.parquet as pq

    from eap_assets.core.features import feature_columns

    if not path.is_file():
        raise SystemExit(f"{path} is missing: materialise recording_training_set for this rotation first")
    names = set(pq.read_schema(path).names)
    amp, width = feature_columns(n_contacts)
    have = sum(1 for c in names if c.startswith("amp_c"))
    if have != n_contacts or not set(amp + width) <= names:
        raise SystemExit(f"{path} has {have} amp_c* columns, the probe {n_contacts} contacts: wrong probe "
                         "(pass --probe)")
    table = pd.read_parquet(path, columns=["split", "ei", "mtype", "cell", *amp, *width])
    key = (pq.read_schema(path).metadata or {}).get(b"eap_assets.key", b"").decode() or None
    return table, key


def subsample(split: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    """Indices of the rows kept: all, or a seeded share of every split (the same share of each)."""
    if max_rows is None or max_rows >= split.size:
        return np.arange(split.size)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC1A6E]))
    keep = []
    for name in ("train", "validation", "test"):
        rows = np.flatnonzero(split == name)
        n = max(1, int(round(rows.size * max_rows / split.size)))
        keep.append(rng.choice(rows, min(n, rows.size), replace=False))
    return np.sort(np.concatenate(keep))


def pipeline_reference(data_dir: Path, rotation: str, task: str) -> dict | None:
    """The registered recording CNN's validation / test accuracy of the run (its unit-classifier report)."""
    path = data_dir / "unit_classifier" / rotation / f"{task}.json"
    try:
        kinds = json.loads(path.read_text())["kinds"]
    except (OSError, ValueError, KeyError):
        return None
    return next((k for k in kinds if k.get("kind") == "cnn"), None)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def markdown_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def machine() -> str:
    import platform
    from importlib import metadata

    info = benchlib.machine_info()
    try:
        tf = metadata.version("tensorflow-cpu")
    except metadata.PackageNotFoundError:
        try:
            tf = metadata.version("tensorflow")
        except metadata.PackageNotFoundError:
            tf = "not installed"
    return (f"{platform.platform()}; {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB; Python "
            f"{info['python']}, TensorFlow {tf}; load average {benchlib.loadavg()}; git {info['git_commit']}"
            f"{' (uncommitted changes)' if info['git_dirty'] else ''}")


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="data directory of a probe run (holds recording_training_set/)")
    parser.add_argument("--rotation", default="3drot")
    parser.add_argument("--tasks", default="binary,mtype")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=None, help="most CNN steps (default: the run's cnn_steps)")
    parser.add_argument("--max-rows", type=int, default=None, help="keep a seeded share of every split (default all)")
    parser.add_argument("--seed", type=int, default=0, help="CNN seed of every variant and task; subsample seed")
    parser.add_argument("--pipeline-seed", action="store_true",
                        help="CNN seed per task as recording_cnn_model's (holes_filled on all rows repeats it)")
    parser.add_argument("--probe", default=None, help="probe spec (default: the run's settings)")
    parser.add_argument("--dagster-home", type=Path, default=None,
                        help="instance folder holding the run's eap_assets_settings.json "
                             "(default DATA_DIR/.dagster_home)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    tasks = [t for t in args.tasks.split(",") if t]

    from eap_assets.core import models
    from eap_assets.core.eaps import derived_seed
    from eap_assets.core.probe import get_probe

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # train_cnn traces its steps once per model: no retracing warnings

    resources, settings_file = run_resources(args.data_dir, args.dagster_home)
    settings, recording, training = resources["settings"], resources["recording"], resources["training"]
    if args.probe is not None:
        settings = type(settings)(**{**{n: getattr(settings, n) for n in type(settings).model_fields},
                                     "probe": args.probe})
    spec = recording.spec(settings)
    probe = spec.probe
    config = training.cnn_config()
    if args.steps is not None:
        config = replace(config, steps=args.steps)
    n_contacts = get_probe(probe).n_contacts
    path = args.data_dir / "recording_training_set" / f"{args.rotation}.parquet"
    print(f"probe {probe} ({n_contacts} contacts), settings {settings_file or 'defaults (no settings file)'}",
          flush=True)
    table, key = load_table(path, n_contacts)
    labels = {t: models.task_labels(table, t) for t in tasks}  # on the whole table: same class indices
    keep = subsample(table["split"].to_numpy(), args.max_rows, args.seed)
    table = table.iloc[keep].reset_index(drop=True)
    split = table["split"].to_numpy()
    masks = {s: split == s for s in ("train", "validation", "test")}
    print(f"{path}: {len(table)} rows used ({', '.join(f'{s} {int(m.sum())}' for s, m in masks.items())})", flush=True)

    layouts, skipped = {}, {}
    for name in variants:
        try:
            layouts[name] = BUILDERS[name](probe)
            print(f"  {name}: {layouts[name].shape[0]} x {layouts[name].shape[1]} -- {layouts[name].note}", flush=True)
        except Skip as exc:
            skipped[name] = str(exc)
            print(f"  {name}: skipped -- {exc}", flush=True)

    rows = []
    for name, layout in layouts.items():
        x = images(layout, table, spec)
        for task in tasks:
            y_all, classes = labels[task]
            y = y_all[keep]
            seed = (derived_seed(settings.seed, "recording", "cnn", args.rotation, task, int31=True)
                    if args.pipeline_seed else args.seed)
            marks: list[tuple[int, float]] = []  # (step, time) at each evaluation: steady ms/step after tracing
            trained = models.train_cnn(x[masks["train"]], y[masks["train"]], x[masks["validation"]],
                                       y[masks["validation"]], len(classes), config, seed, classes=classes,
                                       monitor=lambda step, model, metrics: marks.append((step, time.perf_counter())))
            steady = (1000 * (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
                      if len(marks) > 1 and marks[-1][0] > marks[0][0] else float("nan"))
            accuracy = {s: 100.0 * float((trained.predict(x[masks[s]]) == y[masks[s]]).mean())
                        for s in ("validation", "test")}
            rows.append({"variant": name, "image": f"{layout.shape[0]}x{layout.shape[1]}", "task": task,
                         "validation %": round(accuracy["validation"], 2), "test %": round(accuracy["test"], 2),
                         "training s": round(trained.seconds, 1),
                         "ms/step": round(steady, 1),
                         "steps (best)": f"{trained.steps_run} ({trained.best_step})", "seed": seed})
            print("  " + json.dumps(rows[-1]), flush=True)
    frame = pd.DataFrame(rows)

    lines = [f"# CNN image construction: {probe}, {args.rotation}", "",
             f"- data: `{path}` (key {key}), {len(table)} rows: "
             + ", ".join(f"{s} {int(m.sum())}" for s, m in masks.items()),
             f"- CNN: `{json.dumps(asdict(config))}` (the run's `TrainingSettings.cnn_config()`"
             + (f", steps {args.steps}" if args.steps is not None else "") + f"); settings from `{settings_file}`",
             f"- machine: {machine()}", f"- command: `{benchlib.command_line()}`", ""]
    lines += [markdown_table(frame) if len(frame) else "(nothing trained)", "",
              "`training s`: wall clock of `train_cnn` (model build, tracing, steps, validation); `ms/step`: "
              "between the first and the last validation evaluation (after tracing; nan with one evaluation); "
              "`steps (best)`: steps run and the step whose weights are kept (early stopping).", ""]
    for name, layout in layouts.items():
        lines.append(f"- `{name}` {layout.shape[0]}x{layout.shape[1]}: {layout.note}")
    for name, reason in skipped.items():
        lines.append(f"- `{name}` skipped: {reason}")
    for task in tasks:
        reference = pipeline_reference(args.data_dir, args.rotation, task)
        if reference is not None:
            lines.append(f"- the run's registered recording CNN ({task}, all rows, its own seed): validation "
                         f"{100 * reference['validation accuracy']:.2f} %, "
                         f"test {100 * reference['test accuracy']:.2f} %")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"written {args.out}", file=sys.stderr)
    return frame


if __name__ == "__main__":
    main()
