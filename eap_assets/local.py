"""The embedded local deployment: a Dagster instance inside the repository (sqlite, gitignored)
and the Dagster UI started so that Ctrl-C and SIGTERM stop it cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from eap_assets.core.storage import atomic_write_text

#: Default instance folder, relative to the working directory (the repository root for make).
DEFAULT_HOME = ".dagster_home"
#: Where a running ``make ui`` says which port its webserver answers on (in the instance folder).
UI_STATE = "eap_assets_ui.json"
#: The resources of the instance's last ``make run`` (:mod:`eap_assets.defs.settings`), in the instance folder.
SETTINGS_FILE = "eap_assets_settings.json"


def cpu_count() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def settings_path(home: str | os.PathLike | None = None) -> Path:
    """The settings file of the instance in ``home`` (default ``$DAGSTER_HOME``)."""
    folder = home if home is not None else os.environ.get("DAGSTER_HOME", "")
    return Path(folder).expanduser() / SETTINGS_FILE


def local_dagster_yaml(max_runs: int) -> str:
    """Instance settings of the local deployment: sqlite storage (the default), at most
    ``max_runs`` runs at once (one per core: NEURON is single-threaded), a queue checked every second,
    telemetry off."""
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
run_queue:
  # a freed slot takes the next queued run within a second (default 5 s): many runs of a backfill last
  # only a few seconds (an EAP dataset ~2 s), so the default left the cores idle for a third of the time
  dequeue_interval_seconds: 1
telemetry:
  enabled: false
"""


def ensure_dagster_home(max_runs: int | None = None) -> Path:
    """Use ``$DAGSTER_HOME`` or ``./.dagster_home``; create it with a local ``dagster.yaml`` (at most
    ``max_runs`` runs at once, default one per core) if missing."""
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_HOME).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        atomic_write_text(config, local_dagster_yaml(max_runs or cpu_count()))
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
    # `make run` finds this webserver and launches its backfill there (LocalDagster)
    atomic_write_text(home / UI_STATE, json.dumps({"pid": child.pid, "host": host, "port": port}))

    def forward(signum, frame):  # noqa: ARG001
        if child.poll() is None:
            child.send_signal(signal.SIGINT)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        return child.wait(timeout=None)
    finally:
        (home / UI_STATE).unlink(missing_ok=True)
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


class DagsterError(RuntimeError):
    """The local webserver did not start, or refused a request."""


class LocalDagster:
    """The local instance's webserver and daemon, for ``make run``'s backfills.

    Used as a context manager: reuses the webserver of a running ``make ui`` on the same instance
    (``$DAGSTER_HOME/eap_assets_ui.json``), else starts ``dagster dev -m eap_assets.definitions`` on a
    free loopback port with the automation sensor off (the backfill is what runs) and stops it on
    exit. Runs go through the instance's run queue (``dagster.yaml``: one run per core).
    """

    def __init__(self, home: Path, startup_timeout: float = 300.0, log=print):
        self.home, self.startup_timeout, self.log = Path(home), startup_timeout, log
        self.host, self.port = "127.0.0.1", None
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "LocalDagster":
        state = self.home / UI_STATE
        if state.is_file():
            try:
                info = json.loads(state.read_text())
                os.kill(int(info["pid"]), 0)
                self.port = int(info["port"])
                self.host = "127.0.0.1" if info.get("host") in (None, "0.0.0.0", "::") else info["host"]
                self.gql("{ version }")
                self.log(f"using the running Dagster UI on http://{self.host}:{self.port}")
                self.reload()
                return self
            except (OSError, ValueError, KeyError, DagsterError):
                self.port = None
        self.host, self.port = "127.0.0.1", free_port()
        # one BLAS thread per run: runs go in parallel, one per core
        env = {"OPENBLAS_NUM_THREADS": "1", **os.environ, "DAGSTER_HOME": str(self.home), "EAP_ASSETS_AUTOMATION": "off"}
        command = [sys.executable, "-m", "dagster", "dev", "-m", "eap_assets.definitions", "-h", "127.0.0.1",
                   "-p", str(self.port)]
        self.output = open(self.home / "local_dagster.log", "ab")
        self.process = subprocess.Popen(command, env=env, stdout=self.output, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=_die_with_parent)
        try:
            self._wait_loaded()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # dagster dev's clean shutdown (webserver, daemon, code)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process is not None:
            self.output.close()
        self.process = None

    def _wait_loaded(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        problem = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise DagsterError(f"dagster dev exited with {self.process.returncode}; see "
                                   f"{self.home / 'local_dagster.log'}")
            try:
                entries = self.gql(LOCATIONS)["workspaceOrError"]["locationEntries"]
                errors = [e["locationOrLoadError"].get("message") for e in entries
                          if e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "PythonError"]
                if errors:
                    raise DagsterError(f"the code location does not load: {errors[0]}")
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    return
                problem = "code location loading"
            except (OSError, DagsterError) as exc:
                if isinstance(exc, DagsterError) and "does not load" in str(exc):
                    raise
                problem = str(exc)
            time.sleep(1)
        raise DagsterError(f"the Dagster webserver did not come up in {self.startup_timeout:.0f} s ({problem})")

    def gql(self, query: str, variables: dict | None = None) -> dict:
        """Answer of the webserver's GraphQL endpoint (DagsterError on a GraphQL error)."""
        request = urllib.request.Request(
            f"http://{self.host}:{self.port}/graphql", data=json.dumps({"query": query, "variables": variables or {}}
                                                                     ).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise DagsterError(f"GraphQL: {payload['errors'][0].get('message')}")
        return payload["data"]

    def reload(self) -> None:
        """Reload every code location (a running UI then sees the settings file ``make run`` just wrote)."""
        for entry in self.gql(LOCATIONS)["workspaceOrError"]["locationEntries"]:
            self.gql(RELOAD, {"name": entry["name"]})
        self._wait_loaded()

    def launch_backfill(self, partitions_by_asset: dict[str, list[str] | None], run_config: dict, title: str,
                        tags: dict[str, str]) -> str:
        """Launch one asset backfill (``partitions_by_asset``: asset -> partition keys, None when unpartitioned);
        Dagster orders the runs by the asset graph. Returns the backfill id."""
        selectors = []
        for asset, keys in partitions_by_asset.items():
            selector: dict = {"assetKey": {"path": [asset]}}
            if keys is not None:
                selector["partitions"] = {"ranges": [{"start": k, "end": k} for k in keys]}
            selectors.append(selector)
        params = {"partitionsByAssets": selectors, "runConfigData": run_config, "title": title,
                  "tags": [{"key": k, "value": v} for k, v in tags.items()]}
        result = self.gql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise DagsterError(f"launching the backfill: {result['__typename']}: {result.get('message')}")
        return result["backfillId"]

    def stale_status(self, asset: str, partitions: list[str] | None) -> dict[str | None, str]:
        """Dagster's stale status (``FRESH``, ``STALE`` or ``MISSING``, as the UI marks it) of ``asset`` at each
        of ``partitions`` (None: the unpartitioned asset, keyed None)."""
        found = self.gql(STALE_STATUS, {"key": {"path": [asset]}, "partitions": partitions or [],
                                        "partitioned": partitions is not None})["assetNodeOrError"]
        if found["__typename"] != "AssetNode":
            raise DagsterError(f"asset {asset}: {found['__typename']}: {found.get('message')}")
        if partitions is None:
            return {None: found["staleStatus"]}
        return dict(zip(partitions, found["staleStatusByPartition"]))

    def backfill_status(self, backfill_id: str) -> str:
        found = self.gql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        if found["__typename"] != "PartitionBackfill":
            raise DagsterError(f"backfill {backfill_id}: {found.get('message')}")
        return found["status"]

    def cancel_backfill(self, backfill_id: str) -> None:
        """Cancel a backfill: no new runs; its runs in progress are cancelled."""
        self.gql(CANCEL_BACKFILL, {"id": backfill_id})


#: Terminal states of a backfill (GraphQL ``BulkActionStatus``).
BACKFILL_DONE = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")
LOCATIONS = """query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
RELOAD = """mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) { __typename } }"""
LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } ... on PythonError { message } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status } ... on Error { message } } }"""
STALE_STATUS = """query($key: AssetKeyInput!, $partitions: [String!], $partitioned: Boolean!) {
  assetNodeOrError(assetKey: $key) { __typename ... on AssetNode {
    staleStatus @skip(if: $partitioned) staleStatusByPartition(partitions: $partitions) @include(if: $partitioned) }
  ... on Error { message } } }"""
CANCEL_BACKFILL = """mutation($id: String!) { cancelPartitionBackfill(backfillId: $id) { __typename } }"""


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
