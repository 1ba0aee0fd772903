"""Run every benchmark and write docs/benchmarks.md.

Each benchmark runs in its own process (one BLAS thread per process) after waiting for a
quiet machine (1-minute load average below ``--max-load``, at most ``--wait`` seconds);
results go to ``bench/results/<name>.json`` and the report is rebuilt from those files.

Usage::

    .venv/bin/python bench/run_all.py                 # everything (~1 h), then the report
    .venv/bin/python bench/run_all.py --only eap_stage
    .venv/bin/python bench/run_all.py --report-only   # rebuild docs/benchmarks.md from results
"""

from __future__ import annotations

import benchlib

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH = benchlib.REPO / "bench"
REPORT = benchlib.REPO / "docs" / "benchmarks.md"
#: name -> script and arguments; the name is also the results file.
BENCHMARKS: dict[str, list[str]] = {
    "eap_stage": ["bench_eap_stage.py"],
    "vs_mearec": ["bench_vs_mearec.py"],
    "profile": ["profile_eap_stage.py"],
    "neuron": ["bench_neuron.py"],
    "training": ["bench_training.py"],
    "lgbm_recipe": ["bench_lgbm_recipe.py"],
    "end_to_end": ["bench_end_to_end.py"],
    "recording_set_memory": ["recording_set_memory.py"],
    "classify": ["bench_classify.py"],
}
TARGET_WALL_S = 15.0  # issue 17 (was 60 s)
TARGET_RSS_MIB = 4096.0
TARGET_RATIO = 1000.0  # issue 17 (was 200)
TARGET_END_TO_END_S = 10 * 60.0  # issue 17 (was 30 min)
BEFORE_BACKFILLS_S = 20.7 * 60.0  # issue 15: the cold run before make run became a Dagster backfill


def run(name: str, max_load: float, wait_s: float) -> None:
    load = benchlib.wait_for_quiet(max_load, wait_s)
    print(f"== {name} (load average {load})", flush=True)
    subprocess.run([sys.executable, str(BENCH / BENCHMARKS[name][0]), *BENCHMARKS[name][1:]], cwd=benchlib.REPO,
                   check=True)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _machine(m: dict) -> list[str]:
    blas = "; ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}, {b['num_threads']} thread)"
                     for b in m["blas"])
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    return [f"- CPU: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; {m['platform']}",
            f"- Python {m['python']}; {pkgs}", f"- BLAS: {blas}; thread variables {m['threads_env']}",
            f"- Code: git {m['git_commit']}{' + uncommitted changes' if m['git_dirty'] else ''}"]


def _vs_mearec(r: dict) -> list[str]:
    rows = r["rows"]
    out = [f"Command: `{r['command']}` ({r['date']}). Probe {r['probe']} ({r['contacts']} point contacts), "
           f"{rows[0]['placements']} placements per cell and rotation mode, the same for both; medians of "
           f"{rows[0]['runs']} runs (MEArec) and of ≥ 5 runs (engine), one core each. MEArec: its own "
           "`return_extracellular_spike` per position on an LFPy cell with our spike templates as `cell.imem`; "
           "engine: `EAPEngine.compute` (float32, low-rank currents) on MEArec's rotations, positions and spikes. "
           f"The engine's chunk column is one draw chunk of {rows[0]['chunk']} candidates, as the EAP stage computes "
           "them. 'max |diff| / peak' compares the two outputs EAP by EAP.", ""]
    out += _table(["cell", "segments", "rotation", "MEArec (ms/EAP)", "engine (ms/EAP)", "engine, chunk (ms/EAP)",
                   "ratio", "max abs diff / peak", "load avg start → end"],
                  [[x["mtype"], x["segments"], x["mode"], f"{1e3 * x['mearec_s_per_eap']:.0f}",
                    f"{1e3 * x['engine_s_per_eap']:.3f}", f"{1e3 * x['engine_chunk_s_per_eap']:.3f}",
                    f"**{x['ratio']:.0f}×**", f"{x['max_abs_diff_over_peak']:.1e}",
                    f"{x['loadavg_start'][0]} → {x['loadavg_end'][0]}"] for x in rows])
    worst = min(x["ratio"] for x in rows)
    ttpc1 = min((x["ratio"] for x in rows if x["mtype"] == "TTPC1"), default=float("nan"))
    setups = {x["mtype"]: (x["mearec_setup_s"], x["engine_setup_s"]) for x in rows}
    out += ["", f"Smallest ratio on TTPC1: {ttpc1:.0f}× (target ≥ {TARGET_RATIO:.0f}× on TTPC1: "
            f"{'met' if ttpc1 >= TARGET_RATIO else 'NOT met'}); smallest over all cells: {worst:.0f}× (the small BP "
            "cell, where MEArec's own per-EAP cost is lower). One-off set-up per cell (not in the figures): "
            + "; ".join(f"{k}: LFPy cell + electrode {a:.1f} s, engine {b:.2f} s" for k, (a, b) in setups.items())
            + "."]
    return out


def _stage(r: dict) -> list[str]:
    med = r["median"]
    out = [f"Command: `{r['command']}` ({r['date']}). {r['cells']} cells × {len(r['rotations'])} rotation modes "
           f"({', '.join(r['rotations'])}) × {r['n_eaps']} accepted EAPs, {r['workers']} worker processes "
           "(one BLAS thread each), paper settings, float32 engine; datasets computed in full and not written to "
           "disk. Wall time from the first partition's start to the last one's end; 'with start-up' includes "
           "starting the worker processes; CPU: the partitions' CPU time summed over the workers (divided by "
           "the workers: the wall time on otherwise idle cores with perfect balance). Peak RSS: sum over the "
           "processes of each one's peak. The stage's own 2 workers keep the load average near 2; a load above "
           "that at the start means other work shared the cores.", ""]
    out += _table(["run", "EAPs", "candidates", "wall (s)", "with start-up (s)", "CPU (s)", "EAPs/s", "candidates/s",
                   "peak RSS per worker (MiB)", "peak RSS total (MiB)", "load avg start → end"],
                  [[i + 1, x["eaps"], x["candidates"], f"{x['wall_s']:.1f}", f"{x['wall_with_startup_s']:.1f}",
                    f"{x['cpu_s']:.1f}",
                    f"{x['eaps_per_s']:.0f}", f"{x['candidates_per_s']:.0f}",
                    ", ".join(f"{v:.0f}" for v in x["worker_peak_rss_mib"]), f"{x['total_peak_rss_mib']:.0f}",
                    f"{x['loadavg_start'][0]} → {x['loadavg_end'][0]}"] for i, x in enumerate(r["runs"])])
    ok_wall, ok_rss = med["wall_s"] <= TARGET_WALL_S, med["total_peak_rss_mib"] <= TARGET_RSS_MIB
    out += ["", f"**Median of {len(r['runs'])} runs: {med['wall_s']:.1f} s wall "
            f"({med['wall_with_startup_s']:.1f} s with start-up; {med['cpu_per_worker_s']:.1f} CPU s per worker), "
            f"{med['eaps_per_s']:.0f} EAPs/s, "
            f"{med['candidates_per_s']:.0f} candidates/s, peak RSS {med['total_peak_rss_mib']:.0f} MiB in total.** "
            f"Targets: ≤ {TARGET_WALL_S:.0f} s on 2 cores ({'met' if ok_wall else 'NOT met'}), "
            f"≤ {TARGET_RSS_MIB / 1024:.0f} GiB ({'met' if ok_rss else 'NOT met'}).", ""]
    median_run = sorted(r["runs"], key=lambda x: x["wall_s"])[len(r["runs"]) // 2]
    per_cell = defaultdict(lambda: {"segments": 0, "tries": 0, "accepted": 0, "seconds": 0.0, "cpu_s": 0.0})
    for p in median_run["partitions"]:
        c = per_cell[p["cell"]]
        c["segments"] = p["segments"]
        for k in ("tries", "accepted", "seconds", "cpu_s"):
            c[k] += p[k]
    out += ["Per cell in the median run (4 rotation modes together; wall and CPU seconds in its workers):", ""]
    out += _table(["cell", "segments", "candidates", "acceptance", "wall (s)", "CPU (s)", "CPU ms/candidate"],
                  [[name, c["segments"], c["tries"], f"{c['accepted'] / c['tries']:.0%}", f"{c['seconds']:.1f}",
                    f"{c['cpu_s']:.1f}", f"{1e3 * c['cpu_s'] / c['tries']:.2f}"]
                   for name, c in sorted(per_cell.items(), key=lambda kv: -kv[1]["seconds"])])
    return out


def _profile(r: dict) -> list[str]:
    out = [f"Command: `{r['command']}` ({r['date']}), one core. Per cell, one chunk of {r['chunk']} candidates "
           "(3drot), best of 5: time per (contact × segment) element of the line-source log terms (fused numba "
           "pass and numpy's log), of the products with the low-rank currents (BLAS), and of the whole "
           "`EAPEngine.compute`.", ""]
    out += _table(["cell", "segments", "current ranks", "set-up (s)", "ms/candidate", "log terms (ns/elem)",
                   "products (ns/elem)", "compute (ns/elem)"],
                  [[x["cell"], x["segments"], f"{min(x['ranks'])}–{max(x['ranks'])}", f"{x['setup_s']:.2f}",
                    f"{x['candidate_ms']:.3f}", f"{x['log_terms_ns_per_element']:.1f}",
                    f"{x['products_ns_per_element']:.1f}", f"{x['compute_ns_per_element']:.1f}"]
                   for x in r["breakdown"]])
    out += ["", f"cProfile of `simulate_eap_dataset` for all 13 cells (3drot, {r['profile_n_eaps']} EAPs each, "
            f"serial, {r['profiled_s']:.1f} s under the profiler); own time of the top functions (numpy ufuncs "
            "and matrix products count as their caller's own time):", ""]
    out += _table(["share", "own time (s)", "calls", "function"],
                  [[f"{x['share']:.1%}", f"{x['tottime_s']:.2f}", x["calls"], f"`{x['function']}`"]
                   for x in r["profile"]])
    return out


def _neuron(r: dict) -> list[str]:
    out = [f"Command: `{r['command']}` ({r['date']}). The 13 cells simulated from scratch at paper settings (1.2 s, "
           f"dt 2^-5 ms), {r['workers']} worker processes, a fresh process per cell, largest morphology first. Each "
           "simulation of the current search records the soma potential and every segment's membrane current "
           "(NEURON's per-step recording); the templates come from the one that fires 11-15 spikes (no final "
           f"simulation). Load average {r['loadavg_start'][0]} → {r['loadavg_end'][0]}.", ""]
    out += _table(["cell", "segments", "simulations", "search (nA → spikes)", "accepted simulation (s)",
                   "all simulations (s)", "peak RSS (MiB)"],
                  [[x["cell"], x["segments"], x["simulations"],
                    ", ".join(f"{a:.3f} → {n}" for a, n in x["search"]), x["final_simulation_s"],
                    x["total_simulation_s"], x["peak_rss_mib"]] for x in r["rows"]])
    out += ["", f"**Span of the stage: {r['span_s']:.0f} s on {r['workers']} workers** (target ≤ 120 s, issue 17); "
            f"{r['total_simulation_s']:.0f} s of simulation summed over the cells."]
    return out


def _training(r: dict) -> list[str]:
    out = [f"Command: `{r['command']}` ({r['date']}), on the paper-scale training tables "
           f"(`data/training_table/<rotation>.parquet`), load average {r['load_avg_start'][0]} → "
           f"{r['load_avg_end'][0]}.", "",
           "CNN time per optimiser step (3drot m-type images; median of 3 runs of "
           f"{r['cnn_step_time'][0]['steps_timed']} steps after a warm-up; TensorFlow threads as given, "
           "one process per setting):", ""]
    out += _table(["batch", "TF threads", "ms/step", "samples/s"],
                  [[x["batch"], x["threads"], x["ms_per_step"], x["samples_per_s"]] for x in r["cnn_step_time"]])
    out += ["", "Time to the paper's m-type accuracy (Table III mean over cell types) with the pipeline's CNN "
            "recipe (`TrainingSettings()` defaults, training seed 1: `make run` derives another seed per partition, "
            "so its accuracies differ by up to ~2 pp), two trainings at a time as in `make run`; the test set is "
            "scored after every validation check for this table only (early stopping and the kept weights use "
            "the validation split):", ""]
    def hit(h):
        return f"{h['seconds']:.0f} s (step {h['step']})" if h else "not reached"

    rows = []
    for c in r["time_to_accuracy"]:
        rows.append([c["rotation"], c["paper_mean"], hit(c["reached_paper_minus_3pp"]), hit(c["reached_paper"]),
                     c["final_test_mean"], c["steps_run"], c["best_step"], c["train_seconds"]])
    out += _table(["rotation", "paper (%)", "paper − 3 pp reached after", "paper reached after", "final (%)",
                   "steps run", "best step", "train (s)"], rows)
    out += ["", "LightGBM fit, one thread, early stopping on the validation split: the pipeline's settings (63 bins, "
            "learning rate 0.1, patience 20; median of 3 fits) and the settings before them (255 bins, 0.05, 50; "
            "one fit). Test score: accuracy (binary) or mean over cell types (m-type), %:", ""]
    out += _table(["rotation", "task", "settings", "train rows", "features", "rounds", "wall (s)", "CPU (s)",
                   "test score (%)"],
                  [[x["rotation"], x["task"], x["settings"], x["rows"], x["features"], x["rounds"], x["wall_s"],
                    x["cpu_s"], x["test_score"]] for x in r["lgbm_fit"]])
    return out


def _end_to_end(r: dict) -> list[str]:
    ok_time = r["wall_s"] <= TARGET_END_TO_END_S and r["failed"] == 0
    acc = r["accuracy"]
    ok_acc = bool(acc) and all(a["within_3pp_or_better"] for a in acc if a["kind"] == "cnn")
    anon = r.get("peak_anon_tree_mib") is not None  # sampled since 2026-12-05 (a49c500)
    ok_rss = all((s.get("peak_anon_tree_mib" if anon else "peak_rss_tree_mib") or 0) <= TARGET_RSS_MIB
                 for s in r["stages"])
    memory = (f" ({r['peak_anon_tree_mib']:.0f} MiB anonymous)" if anon else
              " (its anonymous part was not sampled by this run: the figure includes the page cache of the "
              "memory-mapped EAP datasets that the runs read)")
    out = [f"Command: `{r['bench_command']}` ({r['date']}): `{r['command']}`, i.e. a fresh Dagster instance and "
           "data directory, nothing cached but the compiled mechanisms. "
           f"Load average {r['load_avg_start'][0]} → {r['load_avg_end'][0]}.", "",
           f"**{r['wall_s'] / 60:.1f} min wall** for {r['runs']} runs ({r['failed']} failed); peak RSS of the "
           f"whole process tree {r['peak_rss_tree_mib']:.0f} MiB{memory}. Targets: ≤ {TARGET_END_TO_END_S / 60:.0f} "
           f"min ({'met' if ok_time else 'NOT met'}); no slower than the {BEFORE_BACKFILLS_S / 60:.1f} min measured "
           f"before `make run` became a Dagster backfill (issue 15; that run trained neither the waveform kind nor the "
           f"models for real recordings: {'met' if r['wall_s'] <= BEFORE_BACKFILLS_S else 'NOT met'}); every stage "
           f"≤ 4 GiB {'anonymous' if anon else 'RSS'} ({'met' if ok_rss else 'NOT met'}), "
           f"CNN accuracy no more than 3 pp below the paper's ({'met' if ok_acc else 'NOT met'}).", "",
           "Stages (span: first run's start to last run's end, seconds from the start of `make run`; stages "
           "overlap because a rotation's training starts when its last feature table is done). Peak RSS "
           "(tree): all processes together (the daemon and its run processes included), sampled every 0.5 s during "
           "the span" + ("; anonymous: the same without shared pages (memory-mapped files, libraries)." if anon else
                         "."), ""]
    out += _table(["stage", "runs", "start (s)", "end (s)", "span (s)", "sum of run times (s)", "longest run (s)",
                   "peak RSS tree (MiB)", *(["anonymous (MiB)"] if anon else [])],
                  [[s["stage"], s["runs"], s["start_s"], s["end_s"], s["span_s"], s["run_seconds_sum"],
                    s["longest_run_s"], s["peak_rss_tree_mib"], *([s["peak_anon_tree_mib"]] if anon else [])]
                   for s in r["stages"]])
    out += ["", "Test accuracy of this run beside the paper's CNN (binary: accuracy over the test EAPs, the "
            "paper's Table II average; m-type: mean over the 13 cell types, Table III):", ""]
    out += _table(["rotation", "task", "model", "ours (%)", "paper CNN (%)", "difference (pp)", "train (s)"],
                  [[a["rotation"], a["task"], a["kind"], a["ours"], a["paper_cnn"], f"{a['difference_pp']:+.2f}",
                    a["train_seconds"]] for a in sorted(acc, key=lambda a: (a["task"], a["kind"], a["rotation"]))])
    cnn = next((a["cnn_training"] for a in acc if a["kind"] == "cnn"), None)
    if cnn:
        out += ["", f"CNN recipe (one partition's record): {cnn}."]
    profile = r.get("profile")
    if profile:
        busy = profile["step_seconds"] + profile["startup_seconds"]
        out += ["", f"Where the time goes (from the run's Dagster instance): {profile['runs']} runs; "
                f"{profile['step_seconds']:.0f} s of steps and {profile['startup_seconds']:.0f} s of run start-up "
                f"(launch to first step: a new process loading the code location, median "
                f"{profile['startup_median_s']} s per run), i.e. {busy:.0f} core-seconds = {busy / 2 / 60:.1f} min on "
                f"2 cores if nothing ever waited; the rest of the wall time is the backfill daemon's 30 s ticks "
                f"between dependent partitions and the last runs' tail on one core. Median queue wait "
                f"{profile['queued_median_s']} s.", ""]
        out += _table(["step", "steps", "sum (s)", "share of step time (%)"],
                      [[row["step"], row["count"], row["seconds"],
                        round(100 * row["seconds"] / profile["step_seconds"], 1)] for row in profile["steps"]])
        longest = profile.get("longest_run")
        if longest:
            steps = ", ".join(f"{s['step']} {s['seconds']:.0f} s" for s in longest["steps"])
            out += ["", f"The longest run ({longest['partition']}, {longest['seconds']:.0f} s) ran its steps one "
                    f"after the other: {steps}."
                    + (f" Profile recomputed from the kept instance: `{r['profile_command']}`."
                       if r.get("profile_command") else "")]
    return out


def _lgbm_recipe(r: dict) -> list[str]:
    out = [f"Command: `{r['command']}` ({r['date']}), on the {r['rotation']} tables of a paper-scale `make run`; load "
           f"average {r['load_avg_start'][0]} → {r['load_avg_end'][0]}. Every LightGBM model of the rotation fitted "
           "with each tree grown on all features (`lgbm_feature_fraction=1.0`, the recipe before) and on a seeded "
           "half (0.5, the pipeline's), everything else the pipeline's, with the seeds the assets use; the two "
           "recipes of a model run at once, one per core. Fit: the training call (the waveform kind includes its "
           "PCA and feature extraction). Test accuracy: over the test rows; m-type also as the mean over cell types.",
           ""]
    fits = r["fits"]
    out += _table(["family", "kind", "task", "train rows", "features per tree", "fit (s)", "rounds",
                   "test accuracy (%)", "m-type mean over types (%)"],
                  [[f["family"], f["kind"], f["task"], f["train_rows"], "all" if f["feature_fraction"] == 1 else "half",
                    f["fit_s"], f["rounds"], f["test_accuracy"], f.get("test_mean_over_types", "")] for f in fits])
    pairs = {}
    for f in fits:
        pairs.setdefault((f["family"], f["kind"], f["task"]), {})[f["feature_fraction"]] = f
    total = {frac: sum(p[frac]["fit_s"] for p in pairs.values() if frac in p) for frac in (1.0, 0.5)}
    worst = min(((p[0.5]["test_accuracy"] - p[1.0]["test_accuracy"], k) for k, p in pairs.items()
                 if 0.5 in p and 1.0 in p), default=None)
    out += ["", f"All fits: {total[1.0]:.0f} s with all features, {total[0.5]:.0f} s with half "
            f"({total[1.0] / max(total[0.5], 1e-9):.2f}x faster)."
            + (f" Largest test-accuracy change: {worst[0]:+.2f} pp ({' '.join(worst[1])})." if worst else "")]
    return out


def _cycled(r: dict) -> str:
    """Which ground-truth units the analyzer's units were drawn from (not recorded by runs before 2026-12-05)."""
    n = r.get("recording_units")
    if n is None:
        return ""
    return (f" (each of its {n} ground-truth units is the source of ~{r['units'] / n:.0f} units: a random half of its "
            "spikes)")


def _classify(r: dict) -> list[str]:
    ok = r["median_s"] <= r["target_s"]
    out = [f"Command: `{r['command']}` ({r['date']}). A SortingAnalyzer of {r['units']} units (binary folder; templates "
           f"of the cross-check's MEArec recording at {r['rate_hz'] / 1000:g} kHz{_cycled(r)}, so resampling to 32 kHz "
           f"is part of the work; built in {r['setup_s']} s, not timed), classified by "
           "`eap_assets.classify(folder, out=..., write_properties=True)` with both champions (binary and m-type) in "
           "a fresh Python process. 'Answers': from process start to the answers returned (imports, registry "
           "lookup, model loading, mapping, prediction, CSV and unit properties written); 'process': until the "
           "process has ended (Python's shutdown included).", "",
           f"**{r['median_s']:.2f} s** median of {len(r['runs'])} runs from process start to the answers for "
           f"{r['units']} units; target ≤ {r['target_s']:g} s ({'met' if ok else 'NOT met'}); "
           f"{r.get('median_process_s', float('nan')):.2f} s to the end of the process.", ""]
    out += _table(["run", "answers (s)", "process (s)", "imports (s)", "classified", "load average at start",
                   "reference loop (s)"],
                  [[i + 1, run.get("answer_s", ""), run["process_wall_s"], round(run["import_s"], 2),
                    f"{run['classified']}/{run['units']}", run["loadavg"][0] if run.get("loadavg") else "",
                    run.get("reference_loop_s", "")] for i, run in enumerate(r["runs"])])
    out += ["", "'Reference loop': a fixed pure-Python loop (`benchlib.reference_loop_s`) timed just before the run: "
            "the shared host's CPU speed at that moment, which varies by up to ~3x between hours on these "
            "machines, and every step here is CPU-bound Python (imports above all). The verdict depends on it: the "
            "previous runs of this bench (`bench/results/classify.json`): at commit dc21abf (2026-12-05, champions "
            "trained on 6000 EAPs per cell, the binary one a binary model of 1000 two-class rounds) a median 5.48 s "
            "with the reference loop at 0.14–0.16 s; at 02d0570 (2026-12-04, champions "
            "trained on 3000 EAPs per cell, analyzer units drawn from 156 ground-truth units) a median 5.42 s with "
            "the reference loop at 0.15 s; at b5f0604 (2026-12-03, the v2 champions of another registry) 10.96 s at "
            "0.37–0.43 s."]
    last = r["runs"][-1]
    previous, rows = last["import_s"], [["imports (`eap_assets`, `eap_assets.serving`)", f"{last['import_s']:.2f}"]]
    for step, at in last["steps"].items():
        rows.append([step, f"{at - previous:.2f}"])
        previous = at
    out += ["", "Where the time goes (last run; each step's time since the previous one; the first step includes "
            "importing MLflow and its SQLAlchemy store, reading the analyzer and looking up the champions):", ""]
    out += _table(["step", "s"], rows)
    return out


def _recording_set_memory(r: dict) -> list[str]:
    peak = r["peak_mib"]
    ok = peak["RssAnon"] <= TARGET_RSS_MIB
    on_disk = r["recording_eaps_on_disk_mib"] / 1024
    return [f"Command: `{r['command']}` ({r['date']}). The {r['rotation']} `recording_training_set` (the same "
            "core call as the asset, the run's default settings) built in a child process whose "
            f"`/proc/<pid>/status` is sampled every 0.2 s: {r['cells']} cells, {r['eaps']} recording EAPs "
            f"({on_disk:.1f} GiB on disk, memory-mapped), {r['rows']} rows ({r['table_mib']:.0f} MiB as a table), "
            f"{r['seconds']:.0f} s; load average {r['load_avg_start'][0]} → {r['load_avg_end'][0]}.", "",
            f"**Peak anonymous memory {peak['RssAnon']:.0f} MiB** (target ≤ {TARGET_RSS_MIB:.0f} MiB: "
            f"{'met' if ok else 'NOT met'}); peak RSS {peak['VmRSS']:.0f} MiB, of which up to "
            f"{peak['RssFile']:.0f} MiB file pages: the EAP datasets it read stay counted in its RSS while mapped, "
            "as page cache that the kernel drops under memory pressure (so the end-to-end tree figure overstates "
            "what a run needs)." + _same_as_stored(r.get("same_as_stored"))]


def _same_as_stored(same: dict | None) -> str:
    if not same:
        return ""
    if same["rows"] and not same["differing_columns"] and same["basis"]:
        return (f" The table equals the one the run's asset stored to the bit (all {same['columns']} columns), the "
                "basis too.")
    return (f" Unlike the stored table: {len(same['differing_columns'])} of {same['columns']} columns differ "
            f"({', '.join(same['differing_columns'][:5])}), rows {'equal' if same['rows'] else 'differ'} in number, "
            f"basis {'equal' if same['basis'] else 'differs'}.")


def write_report() -> str:
    sections = [("EAP engine vs MEArec, per EAP", "vs_mearec", _vs_mearec), ("Full EAP stage", "eap_stage", _stage),
                ("Where the time goes", "profile", _profile), ("NEURON stage", "neuron", _neuron),
                ("Training", "training", _training),
                ("LightGBM recipe: features per tree", "lgbm_recipe", _lgbm_recipe),
                ("End to end, cold, paper scale", "end_to_end", _end_to_end),
                ("Memory of the recording training set", "recording_set_memory", _recording_set_memory),
                ("Classifying 1000 units of a SortingAnalyzer", "classify", _classify)]
    results = {name: benchlib.load_result(name) for _, name, _ in sections}
    machine = next((r["machine"] for r in results.values() if r), None)
    lines = ["# Benchmarks", "",
             "Generated by `make bench` (`.venv/bin/python bench/run_all.py`) from `bench/results/*.json`; each "
             "benchmark waits for a 1-minute load average below `--max-load` (default 0.5; up to 10 min) and records "
             "the load average at its start and end. Rerun any single one with the command shown in its section, then "
             "`.venv/bin/python bench/run_all.py --report-only`.", "", "## Machine", ""]
    lines += _machine(machine) if machine else ["(no results yet)"]
    if results["vs_mearec"]:  # the same work timed at different hours of this shared host differs by up to ~2x
        ttpc1 = [x for x in results["vs_mearec"]["rows"] if x["mtype"] == "TTPC1"]
        lines += [f"- Host speed at {results['vs_mearec']['date']}: MEArec's own time per TTPC1 EAP "
                  f"{1e3 * min(x['mearec_s_per_eap'] for x in ttpc1):.0f}–"
                  f"{1e3 * max(x['mearec_s_per_eap'] for x in ttpc1):.0f} ms on its CPU (1014–1289 ms on "
                  "2026-12-03 12:22 UTC on an Intel Xeon, same code): the machines of these sessions differ in CPU "
                  "and their shared hosts in speed by up to ~2×, so compare sections by the CPU and date each one "
                  "states, not only by their numbers"]
    for title, name, fmt in sections:
        lines += ["", f"## {title}", ""]
        if results[name]:
            m = results[name]["machine"]
            lines += [f"Code: git {m['git_commit']}{' + uncommitted changes' if m['git_dirty'] else ''}; "
                      f"CPU: {m['cpu']}.", ""]
        lines += fmt(results[name]) if results[name] else [f"(not run: `{name}`)"]
    from eap_assets.core.storage import atomic_write_text

    atomic_write_text(REPORT, "\n".join(lines) + "\n")
    return str(REPORT)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--max-load", type=float, default=0.5)
    parser.add_argument("--wait", type=float, default=600.0, help="longest wait for a quiet machine, s")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the paper-scale `make run` whose templates, training tables and champions the benchmarks "
                             "read (default ./data); e.g. the one `bench_end_to_end.py --keep` leaves")
    args = parser.parse_args(argv)
    if args.data_dir is not None:  # every benchmark reads benchlib.DATA_DIR
        os.environ["EAP_BENCH_DATA_DIR"] = str(args.data_dir.resolve())
    if not args.report_only:
        for name in args.only:
            run(name, args.max_load, args.wait)
    print(f"written {write_report()}")


if __name__ == "__main__":
    main()
