"""Shared helpers of the benchmark scripts: thread limits, machine facts, load average, results.

Importing this module limits BLAS/OpenMP to one thread per process (unless the variables are
already set), so it must be imported before numpy.  Benchmarks compare single cores and
run one process per core for parallel stages (SPEC §7).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
#: The paper-scale run the benchmarks read (templates, training tables, champions): ``$EAP_BENCH_DATA_DIR``, set
#: by ``run_all.py --data-dir`` (``make bench BENCH_ARGS="--data-dir ..."``), else ./data.
DATA_DIR = Path(os.environ.get("EAP_BENCH_DATA_DIR") or REPO / "data")
TEMPLATES_DIR = DATA_DIR / "templates"
#: Cells named in the issue for the side-by-side comparison with MEArec.
PEER_CELLS = ("L5_TTPC1_cADpyr232_1", "L5_BP_bAC217_1")
PACKAGES = ("eap_assets", "numpy", "scipy", "MEArec", "LFPy", "LFPykit", "neuron", "MEAutility", "threadpoolctl",
            "numba")

#: What the benchmarks themselves write, and prose: changes there do not make the measured code "uncommitted".
OUTPUTS = (":!bench/results", ":!docs", ":!README.md")


def template_paths(cells: list[str] | None = None) -> list[Path]:
    """The cached paper-scale spike templates (all, or the named cells); exits with a hint if missing."""
    paths = ([TEMPLATES_DIR / f"{c}.npz" for c in cells] if cells else sorted(TEMPLATES_DIR.glob("*.npz")))
    missing = [p.name for p in paths if not p.exists()]
    if not paths or missing:
        raise SystemExit(f"spike templates missing in {TEMPLATES_DIR} ({', '.join(missing) or 'none found'}): run "
                         "a paper-scale `make run RUN_ARGS=` there, or `make cells-doc` for ./data (~10 min on 2 "
                         "cores), first")
    return paths


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def reference_loop_s(n: int = 5_000_000) -> float:
    """Seconds this host takes for a fixed pure-Python loop right now: how fast the (shared) CPU is at
    the moment of a measurement (on these machines it varies by up to ~1.5x between hours)."""
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i
    return round(time.perf_counter() - start, 3)


def wait_for_quiet(max_load: float = 0.5, timeout_s: float = 600.0, poll_s: float = 15.0, log=print) -> list[float]:
    """Wait until the 1-minute load average is below ``max_load`` (or ``timeout_s`` passed)."""
    deadline = time.monotonic() + timeout_s
    while (load := loadavg())[0] >= max_load and time.monotonic() < deadline:
        log(f"load average {load} >= {max_load}: waiting")
        time.sleep(poll_s)
    return load


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size of this process (or its waited-for children), MiB."""
    return resource.getrusage(who).ru_maxrss / 1024.0


def median(values) -> float:
    return float(statistics.median(values))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info() -> dict:
    """CPU, cores, RAM, Python, package and BLAS versions, git commit (read-only git calls)."""
    import threadpoolctl

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    blas = [{k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for info in threadpoolctl.threadpool_info() if info.get("user_api") == "blas"]
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "ram_gib": _mem_total_gib(),
        "python": sys.version.split()[0], "platform": platform.platform(), "packages": versions, "blas": blas,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", ".", *OUTPUTS)),
        "threads_env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
    }


def command_line() -> str:
    """The command that ran this script, relative to the repository."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO)
    except ValueError:
        pass
    data = os.environ.get("EAP_BENCH_DATA_DIR")  # the data directory chosen by run_all.py --data-dir
    return " ".join([*([f"EAP_BENCH_DATA_DIR={data}"] if data else []), ".venv/bin/python", str(script),
                     *sys.argv[1:]])


def save_result(name: str, result: dict, out: Path | None = None) -> Path:
    """Write a result (with machine facts and the command) to ``bench/results/<name>.json``."""
    from eap_assets.core.storage import atomic_write_text

    path = out or RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "command": command_line(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "machine": machine_info(), **result}
    return atomic_write_text(path, json.dumps(payload, indent=2))


def load_result(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None
