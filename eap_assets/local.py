"""The embedded local deployment: a Dagster instance inside the repository (sqlite, gitignored)
and the Dagster UI started so that Ctrl-C and SIGTERM stop it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from eap_assets.core.storage import atomic_write_text

#: Default instance folder, relative to the working directory (the repository root for make).
DEFAULT_HOME = ".dagster_home"


def cpu_count() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_dagster_yaml(max_runs: int) -> str:
    """Instance settings of the local deployment: sqlite storage (the default), at most
    ``max_runs`` runs at once (one per core: NEURON is single-threaded), telemetry off."""
    return f"""# Local Dagster instance of eap_assets (written by `eap-assets`; edit freely).
# Storage: sqlite files in this folder (Dagster's default). Production: deployment/dagster.yaml.
concurrency:
  runs:
    max_concurrent_runs: {max_runs}      # one run per core; backfills queue behind them
    tag_concurrency_limits:
      - key: eap_assets/stage
        value: neuron
        limit: {max_runs}
  pools:
    default_limit: {max_runs}
telemetry:
  enabled: false
"""


def ensure_dagster_home() -> Path:
    """Use ``$DAGSTER_HOME`` or ``./.dagster_home``; create it with a local ``dagster.yaml`` if missing."""
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_HOME).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        atomic_write_text(config, local_dagster_yaml(cpu_count()))
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def run_ui(host: str = "127.0.0.1", port: int = 3000, workspace: str = "workspace.yaml") -> int:
    """Run ``dagster dev`` (webserver + daemon) in the foreground until Ctrl-C or SIGTERM.

    ``dagster dev`` started from a non-interactive parent inherits an ignored SIGINT; the child
    gets default signal handling, and SIGTERM / SIGINT / SIGHUP sent to this process are passed
    on as SIGINT, dagster's own clean-shutdown signal. If this process's parent (e.g. ``make``)
    dies, Linux sends it SIGTERM, so the UI never outlives the command that started it.
    """
    home = ensure_dagster_home()
    _die_with_parent()
    command = [sys.executable, "-m", "dagster", "dev", "-w", workspace, "-h", host, "-p", str(port)]
    print(f"Dagster UI on http://{host}:{port} (instance {home}); Ctrl-C stops it", flush=True)
    child = subprocess.Popen(command, preexec_fn=_default_signals)

    def forward(signum, frame):  # noqa: ARG001
        if child.poll() is None:
            child.send_signal(signal.SIGINT)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        return child.wait(timeout=None)
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent exits (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with_libc = ctypes.CDLL("libc.so.6", use_errno=True)
        with_libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
