"""Command line: ``eap-assets compile | run | ui | cells-table``."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from eap_assets.core.recording import EAPS_FACTOR, Augmentation
from eap_assets.core.stages import QUICK_N_EAPS, QUICK_STIMULUS
from eap_assets.core.storage import atomic_write_text



def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="output root (default ./data)")
    parser.add_argument("--model-folder", type=Path, action="append", default=[],
                        help="extra folder of NMC-portal cell models (repeatable)")
    parser.add_argument("--cells", default="", help="comma-separated model names (default: all)")
    parser.add_argument("--workers", type=int, default=None, help="runs at once (default: one per core)")
    parser.add_argument("--force", action="store_true", help="recompute even if up-to-date outputs exist")
    parser.add_argument("--quick", action="store_true",
                        help=f"quick preset: {QUICK_STIMULUS.tstop:g} ms simulations, {QUICK_STIMULUS.n_keep} "
                             f"spikes, {QUICK_N_EAPS} EAPs per cell and rotation")


def _settings(args: argparse.Namespace):
    from eap_assets.core.probe import get_probe, is_probe_file
    from eap_assets.defs.resources import SimulationSettings

    probe = getattr(args, "probe", "SqMEA-10-15")
    if is_probe_file(probe):  # the runs' processes may start elsewhere: an absolute path, checked before any work
        probe = str(Path(probe).expanduser().resolve())
    get_probe(probe)
    return SimulationSettings(
        data_dir=str(args.data_dir.expanduser().resolve()), preset="quick" if args.quick else "paper",
        model_folders=[str(p.expanduser().resolve()) for p in args.model_folder],
        n_eaps=getattr(args, "n_eaps", None), probe=probe,
        medium=getattr(args, "medium", "infinite"), seed=getattr(args, "seed", 0), force=args.force,
        noise_rms_uv=getattr(args, "noise_uv", 0.0), noise_kind=getattr(args, "noise_kind", "white"),
        variants_per_cell=getattr(args, "variants", 0), variant_jitter_deg=getattr(args, "variant_jitter", 5.0))


#: Training at the quick preset: a short CNN run on the small tables (the paper's: 5000 steps of 1000), and
#: 8 waveform components (the quick tables have a few dozen EAPs per cell).
QUICK_TRAINING = {"cnn_steps": 300, "cnn_batch_size": 256, "cnn_eval_every": 50, "waveform_components": 8}


def _training(args: argparse.Namespace):
    from eap_assets.defs.training import PAPER_CNN, TrainingSettings

    values = dict(PAPER_CNN) if getattr(args, "paper_cnn", False) else {}
    values.update(QUICK_TRAINING if args.quick else {})
    for name in ("cnn_steps", "cnn_batch_size", "cnn_patience"):
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return TrainingSettings(**values)


def _generalisation(args: argparse.Namespace):
    from eap_assets.defs.generalisation import GeneralisationSettings
    from eap_assets.defs.resources import SimulationSettings

    values = {}
    if getattr(args, "train_copies", None) is not None:
        values["train_copies"] = args.train_copies
    for flag, field in (("recording_protocols", "recording_protocols"),
                        ("recording_generalisation_kinds", "recording_kinds")):
        if getattr(args, flag, None):
            values[field] = [v for v in getattr(args, flag).split(",") if v]
    if getattr(args, "recording_generalisation_eaps", None) is not None:
        values["recording_eaps_per_cell"] = args.recording_generalisation_eaps
    settings = GeneralisationSettings(**values)
    try:  # a bad protocol or kind is said before any work, not by the first run that reads it
        settings.recording_config(SimulationSettings())
    except ValueError as exc:
        raise UsageError(f"--recording-protocols / --recording-generalisation-kinds: {exc}") from None
    return settings


def _recording(args: argparse.Namespace):
    from eap_assets.defs.resources import RecordingSettings

    values = {}
    if getattr(args, "recording_copies", None) is not None:
        values["copies"] = args.recording_copies
    if getattr(args, "recording_eaps_factor", None) is not None:
        values["eaps_factor"] = args.recording_eaps_factor
    return RecordingSettings(**values)


#: The cross-simulator check at the quick preset: a few MEArec templates and units per cell, a 5 s recording.
QUICK_CROSSCHECK = {"units_per_cell": 2, "templates_per_cell": 4, "duration_s": 5.0, "sim_time_s": 0.5,
                    "min_amp_uv": 30.0}


def _crosscheck(args: argparse.Namespace):
    from eap_assets.defs.crosscheck import CrosscheckSettings

    values = dict(QUICK_CROSSCHECK) if args.quick else {}
    for name in ("units_per_cell", "duration_s"):
        if getattr(args, f"crosscheck_{name}", None) is not None:
            values[name] = getattr(args, f"crosscheck_{name}")
    templates_per_cell = values.get("templates_per_cell", CrosscheckSettings.model_fields["templates_per_cell"].default)
    if values.get("units_per_cell", 0) * 2 > templates_per_cell:
        values["templates_per_cell"] = 2 * values["units_per_cell"]
    return CrosscheckSettings(**values)


@contextmanager
def _recording_rotations_of(probe: str):
    """While a run is launched, ``$EAP_ASSETS_RECORDING_ROTATIONS`` says the rotation set of ``probe``'s kind
    (unless set): the partitions of this process and of the code location it starts follow the run's
    probe, not the instance's previous settings (:func:`eap_assets.defs.partitions.recording_rotations`)."""
    import os

    from eap_assets.core.probe import get_probe

    variable = "EAP_ASSETS_RECORDING_ROTATIONS"
    if os.environ.get(variable, "").strip():
        yield
        return
    os.environ[variable] = get_probe(probe).default_rotation
    try:
        yield
    finally:
        os.environ.pop(variable, None)


def _materialize(args: argparse.Namespace, stages: tuple[str, ...]):
    from eap_assets.local import cpu_count

    generalisation = _generalisation(args)
    settings = _settings(args)
    with _recording_rotations_of(settings.probe):
        from eap_assets.run import materialize_graph

        rotations = [r for r in getattr(args, "rotations", "").split(",") if r] or None
        recording_rotations = [r for r in getattr(args, "recording_rotations", "").split(",") if r] or None
        report = materialize_graph(settings, [c for c in args.cells.split(",") if c] or None, rotations, stages,
                                   workers=args.workers or cpu_count(), training=_training(args),
                                   generalisation=generalisation, recording=_recording(args),
                                   recording_rotations=recording_rotations, crosscheck=_crosscheck(args))
    return settings, report


def cmd_compile(args: argparse.Namespace) -> int:
    from eap_assets.core import cells

    models = cells.discover_cell_models([cells.mearec_models_dir(), *args.model_folder])
    start = time.perf_counter()
    build = cells.prepare_mechanisms(list(models.values()))
    print(f"mechanisms of {len(models)} cell models compiled and loadable: {build} ({time.perf_counter() - start:.1f} s)")
    return 0


class UsageError(ValueError):
    """A command-line value that the command cannot use (exit status 2, no traceback)."""


def _interrupt(signum: int, frame) -> None:
    """A stop signal handled as Ctrl-C."""
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    import signal

    stages = tuple(x for x in args.stages.split(",") if x)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops the backfill even if SIGINT came ignored
    for stop in (signal.SIGTERM, signal.SIGHUP):  # so do `kill` and a closed terminal: else the backfill stays
        signal.signal(stop, _interrupt)           # requested, and the next daemon to start would run it unasked
    try:
        settings, report = _materialize(args, stages)
    except KeyboardInterrupt:  # the backfill is cancelled; a rerun materialises what is still missing
        print("interrupted: the backfill was cancelled; `make run` again resumes with what is missing", file=sys.stderr)
        return 130
    summary = atomic_write_text(settings.data_path / "summary.json",
                                json.dumps([asdict(r) for r in report.results], indent=2))
    print(f"results under {settings.data_path}; per-partition outcome in {summary}; "
          "the runs are in the Dagster UI (make ui)")
    for result in report.failed:
        print(f"FAILED {result.job} {result.partition}: {result.error}", file=sys.stderr)
    return 1 if report.failed else 0


def cmd_classify(args: argparse.Namespace) -> int:
    from eap_assets.serving import classify

    if args.dt_ms is not None and args.fs_hz is None:
        args.fs_hz = 1000.0 / args.dt_ms
    tasks = ("binary", "mtype") if args.task == "both" else (args.task,)
    frame = classify(args.source, tasks=tasks, rotation=args.rotation, model=args.model, alias=args.alias,
                     version=args.version, probe=args.probe, fs_hz=args.fs_hz, filtered=args.filtered,
                     tracking_uri=args.tracking_uri, data_dir=args.data_dir, out=args.out,
                     write_properties=not args.no_properties, log=print)
    shown = [c for c in frame.columns if c in ("unit_id", "error", "truth_cell")
             or c.endswith(("_predicted", "_confidence", "_abstained", "_ood"))]
    print(frame[shown].head(20).to_string(index=False))
    return 0


def cmd_mlflow_ui(args: argparse.Namespace) -> int:
    import os

    from eap_assets import registry
    from eap_assets.defs.resources import SimulationSettings

    uri = args.tracking_uri or registry.default_tracking_uri(SimulationSettings(data_dir=str(args.data_dir)).data_path)
    registry.configure(uri, "eap_assets")
    print(f"MLflow UI on http://{args.host}:{args.port} ({uri}); Ctrl-C stops it", flush=True)
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                               "--host", args.host, "--port", str(args.port)])
    return 1  # execvp only returns by raising


def cmd_ui(args: argparse.Namespace) -> int:
    from eap_assets.local import run_ui

    return run_ui(args.host, args.port, args.workspace)


def probe_run_record(data_dir: Path, rotation: str = "3drot") -> dict:
    """What :func:`eap_assets.core.report.probe_comparison_markdown` needs of one probe's ``make run`` data directory."""
    import numpy as np
    import pandas as pd

    from eap_assets.core.features import feature_columns
    from eap_assets.core.probe import ProbeError, get_probe, probe_grid
    from eap_assets.core.rotations import ROTATION_MODES
    from eap_assets.defs.recording import classifier_path
    from eap_assets.defs.resources import SimulationSettings
    from eap_assets.defs.training import evaluation_path

    settings = SimulationSettings(data_dir=str(data_dir))
    table_path = settings.data_path / "training_table" / f"{rotation}.parquet"
    if not table_path.is_file():
        raise FileNotFoundError(f"{data_dir}: no training table for {rotation} ({table_path}); run `make run` there first")
    meta = json.loads(next((settings.data_path / "eaps").glob(f"*/{rotation}/meta.json")).read_text())
    probe = get_probe(meta["probe"])
    try:
        image = "×".join(map(str, probe_grid(meta["probe"]).shape))
    except ProbeError:
        image = "none"
    amp_cols, _ = feature_columns(probe.n_contacts)
    table = pd.read_parquet(table_path, columns=amp_cols + ["cell"])
    amplitude = table[amp_cols].to_numpy()
    paper_results, served = {}, {}
    # the unit classifiers' reports, read once: the probe kind's rotation set (physrot on a shank) is the row
    # of the models for recordings if trained, else `rotation`'s; every set trained is shown side by side
    reports = {(r, t): json.loads(classifier_path(settings, r, t).read_text())
               for r in ROTATION_MODES for t in ("binary", "mtype") if classifier_path(settings, r, t).is_file()}
    recording_rotation = next((r for r in dict.fromkeys([probe.default_rotation, rotation])
                               if any(k[0] == r for k in reports)), probe.default_rotation)
    for task in ("binary", "mtype"):
        path = evaluation_path(settings, rotation, task)
        if path.is_file():
            paper_results[task] = {k: v["accuracy"] for k, v in json.loads(path.read_text())["results"].items()}
        record = reports.get((recording_rotation, task))
        if record is not None:
            served[task] = {"kind": record["kind"], "accuracy": 100.0 * record["test"]["accuracy"],
                            "ece": record["test"]["ece_after"],
                            "registered": f"v{record['version']} ({record['alias']})",
                            "kinds": {row["kind"]: 100.0 * row["test accuracy"] for row in record["kinds"]},
                            "by_rotation": {r: 100.0 * rep["test"]["accuracy"] for (r, t), rep in reports.items()
                                            if t == task}}
    made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(table_path.stat().st_mtime))
    return {"probe": probe.name, "contacts": probe.n_contacts, "kind": probe.kind, "image": image, "made": made,
            "rotation": rotation, "recording_rotation": recording_rotation,
            "n_eaps": int(table.groupby("cell").size().median()),
            "contacts_30uv": float(np.median((amplitude >= 30.0).sum(axis=1))),
            "contacts_10uv": float(np.median((amplitude >= 10.0).sum(axis=1))),
            "paper": paper_results, "classifier": served}


def cmd_probes_report(args: argparse.Namespace) -> int:
    from eap_assets.core.report import probe_comparison_markdown

    runs = [probe_run_record(Path(d), args.rotation) for d in args.data_dirs]
    text, _ = probe_comparison_markdown(runs)
    header = (f"# Results per probe\n\nGenerated by `eap-assets probes-report {' '.join(map(str, args.data_dirs))}` "
              "(`make probes`) from the data directories of one `make run` per probe "
              f"(`--probe P --rotations {args.rotation}`, every probe's models registered in one MLflow registry). "
              f"'noise-free': the paper family's test accuracy (noise-free, unfiltered EAPs; rotation {args.rotation}); "
              "'realistic': the models trained for recordings on their realistic test split (recording noise, "
              "band-pass, the probe kind's medium and rotation set: 3drot on an MEA, physrot on a shank; see README, "
              "Models for real recordings); 'unit classifier': the kind among them best on "
              "validation, calibrated and registered (the version and alias the promotion gate gave it). Contacts "
              "≥ X µV: median over the training table's EAPs of the contacts whose amplitude (trough to following peak) reaches X. "
              "'data made': when the training table was written (runs of other dates may be of other commits).\n\n")
    atomic_write_text(args.out, header + text)
    print(f"written {args.out}")
    return 0


def cmd_cells_table(args: argparse.Namespace) -> int:
    import LFPy
    import neuron

    from eap_assets.core.intracellular import SpikeTemplates
    from eap_assets.core.stages import cells_table, scan_models, templates_path
    from eap_assets.local import cpu_count

    settings, report = _materialize(args, ("cells",))
    failures = {r.partition: r.error for r in report.failed}
    models = {m.name: m for m in scan_models(args.model_folder, [c for c in args.cells.split(",") if c] or None)[0]}
    templates = [SpikeTemplates.load(templates_path(settings.data_path, n)) for n in sorted(models)
                 if n not in failures]
    s = settings.stimulus()
    workers = args.workers or cpu_count()
    text = (f"# Cell models at {settings.preset} settings\n\n"
            f"Generated by `eap-assets cells-table{' --quick' if args.quick else ''}{' --force' if args.force else ''}` "
            f"(`make cells-doc`), which materialises `cell_model` and `spike_templates` for every cell, "
            f"{workers} runs at once. Soma current step from {s.delay:g} ms to the end of a {s.tstop:g} ms "
            f"simulation, dt = {s.dt:g} ms, {s.n_keep} spikes kept after skipping the first, accepted spike counts "
            f"{s.n_keep + 1}-{s.max_spikes}. Segments: LFPy's default lambda100 rule.\n\n"
            f"Times are wall-clock seconds per cell with {workers} cells simulated at once on "
            f"{platform.machine()} ({cpu_count()} cores), NEURON {neuron.__version__}, LFPy {LFPy.__version__}. "
            "Every simulation of the current search records the soma Vm and every segment's membrane current; "
            "'accepted simulation' is the one the templates were cut from, 'all simulations' the whole search.\n\n"
            + cells_table(templates, models))
    if failures:
        text += "\nFailed: " + "; ".join(f"{k}: {v}" for k, v in failures.items()) + "\n"
    atomic_write_text(args.out, text)
    print(text)
    print(f"written to {args.out}")
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eap-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compile", help="compile the NEURON mechanisms of all cell models (cached)")
    p.add_argument("--model-folder", type=Path, action="append", default=[])
    p.set_defaults(func=cmd_compile)
    p = sub.add_parser("run", help="materialise the asset graph (cells -> EAPs -> feature/training tables) "
                                   "through the local Dagster instance, skipping up-to-date partitions")
    _common(p)
    p.add_argument("--rotations", default="", help="comma-separated rotation partitions (default: all)")
    p.add_argument("--stages", default="variants,cells,eaps,training,models,recording,report",  # run.DEFAULT_STAGES
                   help="comma-separated subset of variants,cells,eaps,training,models,recording,generalisation,"
                        "recording_generalisation,crosscheck,report (variants: only with --variants N; recording: the "
                        "models for real recordings and the served unit classifiers; generalisation: noise sweep, "
                        "unseen variants / distances / cell types, then the generalisation report; "
                        "recording_generalisation: the same protocols for the recipe of the models for real recordings "
                        "(with --variants N, their recording EAPs too); crosscheck: MEArec's own templates "
                        "and recordings of the cells classified by the unit classifiers, then its report)")
    p.add_argument("--crosscheck-units-per-cell", type=int, default=None,
                   help="crosscheck stage: units of every cell model per recording (default 30; 2 with --quick)")
    p.add_argument("--crosscheck-duration-s", type=float, default=None,
                   help="crosscheck stage: recording length in s (default 60; 5 with --quick)")
    p.add_argument("--recording-rotations", default="",
                   help="rotations of the models for real recordings (default: $EAP_ASSETS_RECORDING_ROTATIONS, else "
                        "the probe kind's: 3drot for an MEA, physrot for a shank)")
    p.add_argument("--recording-copies", type=int, default=None,
                   help="augmented copies of every EAP in the recording training set "
                        f"(default {Augmentation().copies})")
    p.add_argument("--recording-eaps-factor", type=float, default=None,
                   help="EAPs per cell and rotation of the recording training set, as a multiple of the paper's "
                        f"(default {EAPS_FACTOR:g})")
    p.add_argument("--recording-protocols", default="",
                   help="recording_generalisation stage: protocols among own_split,unseen_variants,hold_out_type "
                        "(default: all)")
    p.add_argument("--recording-generalisation-kinds", default="",
                   help="recording_generalisation stage: model kinds trained per protocol (default lgbm,waveform)")
    p.add_argument("--recording-generalisation-eaps", type=int, default=None, metavar="N",
                   help="recording_generalisation stage: each cell's first N recording EAPs (default 3000)")
    p.add_argument("--train-copies", type=int, default=None,
                   help="generalisation stage: noisy copies of each training EAP (default 2; 0: no augmentation)")
    p.add_argument("--paper-cnn", action="store_true",
                   help="the paper's CNN schedule: 5000 steps of 1000 at Adam 5e-4, no early stopping "
                        "(default: the pipeline's recipe, batches of 128 with early stopping)")
    p.add_argument("--cnn-steps", type=int, default=None, help="most CNN steps (default 8000; 300 with --quick)")
    p.add_argument("--cnn-batch-size", type=int, default=None, help="CNN batch (default 128; paper 1000)")
    p.add_argument("--cnn-patience", type=int, default=None,
                   help="early stopping after this many validation checks without improvement (default 10)")
    p.add_argument("--n-eaps", type=int, default=None,
                   help="accepted EAPs per cell and rotation (default 1000; 50 with --quick)")
    p.add_argument("--probe", default="SqMEA-10-15",
                   help="probe: a MEAutility name (SqMEA-10-15, Neuronexus-32, Neuropixels-384, ...), "
                        "Neuropixels-1.0 (probeinterface's NP1000, bank 0), or a probeinterface JSON file")
    p.add_argument("--medium", default="infinite", choices=["infinite", "mea_plane"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-uv", type=float, default=0.0,
                   help="RMS (µV) of recording noise added to the EAPs before feature extraction (default 0: none)")
    p.add_argument("--noise-kind", default="white", choices=["white", "band"],
                   help="white Gaussian noise, or Gaussian noise band-passed to 300-6000 Hz")
    p.add_argument("--variants", type=int, default=0, metavar="N",
                   help="N morphology variants of every BBP model, simulated through the cell and EAP stages "
                        "(not in the paper's training tables; default 0: none)")
    p.add_argument("--variant-jitter", type=float, default=5.0, metavar="DEG",
                   help="largest branch rotation of a variant, degrees (default 5)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("ui", help="start the Dagster UI (webserver + daemon) on the local instance")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--workspace", default="workspace.yaml")
    p.set_defaults(func=cmd_ui)
    p = sub.add_parser("classify", help="classify the units of a recording with registered classifiers")
    p.add_argument("source", help="a SpikeInterface SortingAnalyzer folder or .zarr, a Templates .zarr, a MEArec "
                                  ".h5 (recording or templates), or a .npy (units, channels, samples) in µV")
    p.add_argument("--task", default="both", choices=["binary", "mtype", "both"],
                   help="E/I (binary), m-type, or both (default)")
    p.add_argument("--rotation", default=None,
                   help="orientation set of the classifiers: 3drot (any orientation) or physrot (cells along a shank); "
                        "default: the recording's probe kind's (physrot on a shank, 3drot on an MEA) if a classifier "
                        "of it fits the probe, else 3drot")
    p.add_argument("--model", default=None, help="a registered model instead of the probe's unit classifiers, e.g. "
                                                 "unit_classifier_SqMEA-10-15_3drot_mtype or paper_cnn_SqMEA-10-15_3drot_mtype")
    p.add_argument("--alias", default="champion", help="registry alias (default champion)")
    p.add_argument("--version", default=None, help="a model version instead of the alias")
    p.add_argument("--probe", default=None, help=".npy: MEAutility probe name or probeinterface JSON file")
    p.add_argument("--fs-hz", type=float, default=None, help=".npy: sampling rate in Hz")
    p.add_argument("--dt-ms", type=float, default=None, help=".npy: sampling step in ms (instead of --fs-hz)")
    filt = p.add_mutually_exclusive_group()
    filt.add_argument("--filtered", dest="filtered", action="store_true", default=None,
                      help="the templates are band-passed already (needed for .npy; overrides the source)")
    filt.add_argument("--unfiltered", dest="filtered", action="store_false",
                      help="the templates are not band-passed: the model's band-pass is applied")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="data directory holding the MLflow store")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite under --data-dir)")
    p.add_argument("--out", type=Path, default=Path("units.csv"), help="answers, .csv or .parquet (default units.csv)")
    p.add_argument("--no-properties", action="store_true",
                   help="do not store the answers as unit properties of the analyzer's sorting")
    p.set_defaults(func=cmd_classify)
    p = sub.add_parser("mlflow-ui", help="start the MLflow UI on the local tracking store")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_mlflow_ui)
    p = sub.add_parser("cells-table", help="simulate every cell's templates and write the table of docs/cells.md")
    _common(p)
    p.add_argument("--out", type=Path, default=Path("docs/cells.md"))
    p.set_defaults(func=cmd_cells_table)
    p = sub.add_parser("probes-report", help="the per-probe results table (data/reports/probes.md, part of "
                                             "docs/results.md) from one data directory per probe")
    p.add_argument("data_dirs", nargs="+", type=Path, help="data directories of `make run --probe P`")
    p.add_argument("--rotation", default="3drot")
    p.add_argument("--out", type=Path, default=Path("data/reports/probes.md"))
    p.set_defaults(func=cmd_probes_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    from eap_assets.core.probe import ProbeError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ProbeError, UsageError) as exc:  # a bad --probe or setting: said before any work, without a traceback
        print(f"eap-assets: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
