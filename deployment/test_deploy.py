"""``make test-deploy``: the production deployment, end to end, on this machine.

Starts, in a temporary directory and on free ports of 127.0.0.1:

1. PostgreSQL (Debian's, installed with apt-get if missing) with a database for Dagster and one for MLflow;
2. ``mlflow server`` with the Postgres backend store and served artefacts;
3. the user-code gRPC server (``dagster code-server start -m eap_assets.definitions``), then
   ``dagster-webserver`` and ``dagster-daemon`` with ``DAGSTER_HOME`` holding ``deployment/dagster.yaml``
   unchanged (Postgres storage, queued runs: at most 2 at once).

Then, through the webserver's GraphQL API only (as a user or CI would), it registers the cell
partitions, sets the pool limits and launches backfills at a tiny scale (quick preset, few EAPs):
every cell's ``cell_models_job`` (13), then ``eap_datasets_job`` for every cell x rotation (52), then
``training_tables_job`` for one rotation and ``models_job`` for both of its tasks with very few CNN
steps. It waits for each, asserts that every run succeeded, every asset check passed, the run queue
kept its limit, and that the MLflow server holds the runs, registered models and artefacts. Everything
it started is stopped and the temporary directory deleted on exit (also on failure, Ctrl-C or SIGTERM;
``--keep`` keeps the directory for inspection).

Run it with ``make test-deploy`` (installs the ``deploy`` extra first) or
``.venv/bin/python deployment/test_deploy.py [--cells A,B] [--n-eaps 20] [--keep]``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from eap_assets.core.models import KINDS

#: The model assets of ``models_job`` (one per model kind) and what each run must register.
MODEL_ASSETS = tuple(f"{kind}_model" for kind in KINDS)

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT = REPO / "deployment"
BIN = Path(sys.executable).parent
LOCATION = "eap_assets"
REPOSITORY_SELECTOR = {"repositoryName": "__repository__", "repositoryLocationName": LOCATION}
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
TERMINAL_BACKFILL_STATUSES = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
#: Pool limits set through the API (deployment/dagster.yaml gives unlisted pools `default_limit`).
POOL_LIMITS = {"neuron": 2, "training": 1}
#: Tiny training: enough to exercise every code path, nothing more.
TINY_TRAINING = {"cnn_steps": 30, "cnn_batch_size": 64, "cnn_eval_every": 10,
                 "lgbm_n_estimators": 30, "lgbm_early_stopping_rounds": 10}


class DeployTestError(RuntimeError):
    """A step of the deployment test failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[test-deploy {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# processes: started in their own session, stopped by pid together with the descendants they spawned


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process, from /proc."""
    table = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        table[int(stat.split("/")[2])] = (int(fields[1]), fields[19])
    return table


def descendants(pid: int) -> dict[int, str]:
    """pid -> start time of every process below ``pid`` (its run workers, server subprocesses)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = table[child][1]
            todo.append(child)
    return found


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Service:
    """A server process this test started, with its log file."""

    name: str
    process: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; leftover descendants are killed by pid."""
        tree = descendants(self.process.pid)
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        still = _proc_table()
        for pid, started in tree.items():
            if pid in still and still[pid][1] == started:  # the same process, not a reused pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------------
# PostgreSQL (Debian's binaries, a throw-away cluster in the temporary directory)


def postgres_bin() -> Path:
    """Directory of Debian's PostgreSQL server binaries; installs ``postgresql`` with apt-get if missing."""
    def find() -> Path | None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
        return Path(found[-1]).parent if found else None

    if find() is None:
        if shutil.which("apt-get") is None:
            raise DeployTestError("PostgreSQL server binaries not found and no apt-get: install PostgreSQL")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        log("installing PostgreSQL (apt-get install -y postgresql)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]):
            proc = subprocess.run(sudo + command, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise DeployTestError(f"{' '.join(sudo + command)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    bindir = find()
    if bindir is None:
        raise DeployTestError("PostgreSQL installed but no /usr/lib/postgresql/*/bin/initdb found")
    return bindir


@dataclass
class Postgres:
    """A PostgreSQL cluster on 127.0.0.1:``port`` owned by ``postgres`` (root) or the current user."""

    root: Path
    port: int
    user: str = "eap"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    bindir: Path = field(default_factory=postgres_bin)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _as_owner(self, command: Sequence[str]) -> list[str]:
        # initdb and the server refuse to run as root: run them as Debian's `postgres` user then
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)

    def _run(self, command: Sequence[str]) -> None:
        proc = subprocess.run(self._as_owner(command), cwd=self.root, capture_output=True, text=True)
        if proc.returncode != 0:
            raise DeployTestError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def start(self, databases: Sequence[str]) -> None:
        self.root.mkdir(mode=0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        try:
            self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                       "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"])
        finally:
            pwfile.unlink()
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   "-c max_connections=200")
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "postgres.log"),
                   "-o", options, "-w", "-t", "60", "start"])
        import psycopg2

        with contextlib.closing(psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                                 password=self.password, dbname="postgres")) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                for db in databases:
                    cur.execute(f'CREATE DATABASE "{db}"')

    def url(self, db: str) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"])


# --------------------------------------------------------------------------------------------------
# the Dagster webserver's GraphQL API


class GraphQL:
    """POST queries to ``http://127.0.0.1:<port>/graphql``; raises on transport or GraphQL errors."""

    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/graphql"

    def __call__(self, query: str, variables: dict | None = None, timeout: float = 120) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.load(response)
        if payload.get("errors"):
            raise DeployTestError(f"GraphQL errors: {json.dumps(payload['errors'])[:2000]}")
        return payload["data"]


LOCATIONS = """
query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } ... on PythonError { message } } }"""
ADD_PARTITION = """
mutation($key: String!, $defName: String!, $repo: RepositorySelector!) {
  addDynamicPartition(partitionKey: $key, partitionsDefName: $defName, repositorySelector: $repo) {
    __typename ... on PythonError { message } ... on UnauthorizedError { message } } }"""
SET_POOL_LIMIT = "mutation($key: String!, $limit: Int!) { setConcurrencyLimit(concurrencyKey: $key, limit: $limit) }"
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } ... on PythonError { message } } }"""
BACKFILL = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status numPartitions error { message } } ... on Error { message } } }"""
RUNS = """
query($filter: RunsFilter) { runsOrError(filter: $filter, limit: 1000) { __typename
  ... on Runs { results { runId jobName status startTime endTime tags { key value } } }
  ... on Error { message } } }"""
RUN_EVENTS = """
query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { eventConnection(limit: 10000) { events {
  __typename
  ... on AssetCheckEvaluationEvent { evaluation { checkName success description } }
  ... on ExecutionStepFailureEvent { stepKey error { message } }
  ... on RunFailureEvent { message } } } } } }"""
PARTITION_STATS = """
query($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) { __typename
  ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed } } } }"""
SENSOR = """
query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { __typename
  ... on Sensor { jobOriginId sensorState { selectorId status } } ... on Error { message } } }"""
STOP_SENSOR = """
mutation($origin: String!, $selector: String!) { stopSensor(jobOriginId: $origin, jobSelectorId: $selector) {
  __typename ... on StopSensorMutationResult { instigationState { status } } ... on Error { message } } }"""
TERMINATE = """
mutation($ids: [String!]!) { terminateRuns(runIds: $ids, terminatePolicy: MARK_AS_CANCELED_IMMEDIATELY) {
  __typename } }"""


@dataclass
class BackfillOutcome:
    """What one backfill did: its runs (id -> status), check evaluations and wall time."""

    job: str
    backfill_id: str
    runs: list[dict]
    seconds: float
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return sum(r["status"] == "SUCCESS" for r in self.runs)


# --------------------------------------------------------------------------------------------------
# the deployment


class Deployment:
    """Everything the test starts, under one temporary directory; :meth:`close` stops it all."""

    def __init__(self, root: Path):
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir()
        self.home = root / "dagster_home"
        self.data = root / "data"
        self.services: list[Service] = []
        self.postgres: Postgres | None = None
        self.gql: GraphQL | None = None
        self.env: dict[str, str] = {}
        self.mlflow_uri = ""

    # -- processes ----------------------------------------------------------------------------------
    def spawn(self, name: str, command: Sequence[str], env: dict[str, str]) -> Service:
        log_path = self.logs / f"{name}.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(list(command), cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
        service = Service(name, process, log_path)
        self.services.append(service)
        return service

    def wait_until(self, what: str, ready: Callable[[], bool], timeout: float, interval: float = 1.0) -> None:
        """Poll ``ready`` until true; fail early, with its log, if a service died meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for service in self.services:
                if not service.alive():
                    raise DeployTestError(f"{service.name} exited with {service.process.returncode} while waiting "
                                          f"for {what}; its log ({service.log_path}):\n{service.log_tail()}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(interval)
        raise DeployTestError(f"timed out after {timeout:.0f} s waiting for {what}")

    # -- start ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.postgres = Postgres(self.root / "postgres", free_port())
        self.postgres.start(["dagster", "mlflow"])
        log(f"PostgreSQL {self.postgres.bindir.parent.name} on 127.0.0.1:{self.postgres.port} "
            f"(databases dagster, mlflow)")

        mlflow_port = free_port()
        self.mlflow_uri = f"http://127.0.0.1:{mlflow_port}"
        (self.root / "mlartifacts").mkdir()
        mlflow_env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": self.postgres.url("mlflow")}  # not on argv
        self.spawn("mlflow", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                              "--workers", "1", "--serve-artifacts",
                              "--artifacts-destination", str(self.root / "mlartifacts")], mlflow_env)
        self.wait_until("the MLflow server", lambda: _http_ok(f"{self.mlflow_uri}/health"), timeout=120)
        log(f"MLflow server {self.mlflow_uri} (Postgres backend store, artefacts served from {self.root}/mlartifacts)")

        self.home.mkdir()
        shutil.copy(DEPLOYMENT / "dagster.yaml", self.home / "dagster.yaml")  # unchanged
        grpc_port, web_port = free_port(), free_port()
        (self.home / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
            "host": "127.0.0.1", "port": grpc_port, "location_name": LOCATION}}]}))
        self.env = {key: value for key, value in os.environ.items() if not key.startswith(("EAP_ASSETS_", "DAGSTER_"))}
        self.env.update({
            "DAGSTER_HOME": str(self.home), "DAGSTER_COMPUTE_LOGS_DIR": str(self.root / "compute_logs"),
            "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.postgres.port),
            "DAGSTER_PG_USER": self.postgres.user, "DAGSTER_PG_PASSWORD": self.postgres.password,
            "DAGSTER_PG_DB": "dagster",
            "EAP_ASSETS_DATA_DIR": str(self.data), "EAP_ASSETS_PRESET": "quick",
            "EAP_ASSETS_MLFLOW_URI": self.mlflow_uri, "EAP_ASSETS_EXECUTOR": "in_process",
            "EAP_ASSETS_AUTOMATION": "off",  # only the test's backfills run (the automation sensor would follow them)
            "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
        if "EAP_ASSETS_CACHE" in os.environ:  # keep the compiled mechanisms where they are
            self.env["EAP_ASSETS_CACHE"] = os.environ["EAP_ASSETS_CACHE"]

        self.spawn("code-server", [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1",
                                   "-p", str(grpc_port), "-m", "eap_assets.definitions", "--location-name", LOCATION],
                   self.env)
        workspace = str(self.home / "workspace.yaml")
        self.spawn("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port),
                                 "-w", workspace], self.env)
        self.gql = GraphQL(web_port)
        self.wait_until("the webserver", lambda: _http_ok(f"http://127.0.0.1:{web_port}/server_info"), timeout=180)
        self.wait_until("the code location to load", self._location_loaded, timeout=300, interval=2)
        log(f"dagster-webserver http://127.0.0.1:{web_port}, code server 127.0.0.1:{grpc_port}, "
            f"DAGSTER_HOME {self.home} (deployment/dagster.yaml)")

    def _location_loaded(self) -> bool:
        data = self.gql(LOCATIONS)["workspaceOrError"]
        if data["__typename"] != "Workspace":
            raise DeployTestError(f"workspace: {data.get('message')}")
        for entry in data["locationEntries"]:
            if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
                loaded = entry["locationOrLoadError"] or {}
                if loaded.get("__typename") == "PythonError":
                    raise DeployTestError(f"code location failed to load: {loaded['message']}")
                return loaded.get("__typename") == "RepositoryLocation"
        return False

    def start_daemon(self) -> None:
        self.spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.home / "workspace.yaml")], self.env)
        time.sleep(3)
        if not self.services[-1].alive():
            raise DeployTestError(f"dagster-daemon exited:\n{self.services[-1].log_tail()}")
        log("dagster-daemon running (run queue, backfills, sensor)")

    # -- API steps ------------------------------------------------------------------------------------
    def add_cell_partitions(self, cells: Sequence[str]) -> None:
        for cell in cells:
            result = self.gql(ADD_PARTITION, {"key": cell, "defName": "cell_model",
                                              "repo": REPOSITORY_SELECTOR})["addDynamicPartition"]
            if result["__typename"] != "AddDynamicPartitionSuccess":
                raise DeployTestError(f"adding cell partition {cell}: {result}")

    def stop_sensor(self, name: str) -> None:
        """Stop a sensor that runs by default, so that only the test launches runs."""
        selector = {**REPOSITORY_SELECTOR, "sensorName": name}
        sensor = self.gql(SENSOR, {"selector": selector})["sensorOrError"]
        if sensor["__typename"] != "Sensor":
            raise DeployTestError(f"sensor {name}: {sensor['__typename']}: {sensor.get('message')}")
        if sensor["sensorState"]["status"] == "STOPPED":  # EAP_ASSETS_AUTOMATION=off: stopped already
            return
        result = self.gql(STOP_SENSOR, {"origin": sensor["jobOriginId"],
                                        "selector": sensor["sensorState"]["selectorId"]})["stopSensor"]
        if result["__typename"] != "StopSensorMutationResult" or result["instigationState"]["status"] != "STOPPED":
            raise DeployTestError(f"stopping sensor {name}: {result}")

    def set_pool_limits(self, limits: dict[str, int]) -> None:
        for pool, limit in limits.items():
            if not self.gql(SET_POOL_LIMIT, {"key": pool, "limit": limit})["setConcurrencyLimit"]:
                raise DeployTestError(f"setting the limit of pool {pool!r} failed")

    def backfill(self, job: str, partitions: Sequence[str], run_config: dict, timeout: float) -> BackfillOutcome:
        """Launch a job backfill over ``partitions`` and wait until every run has finished."""
        start = time.monotonic()
        params = {"selector": {"partitionSetName": f"{job}_partition_set", "repositorySelector": REPOSITORY_SELECTOR},
                  "partitionNames": list(partitions), "runConfigData": run_config,
                  "title": f"test-deploy {job}", "tags": [{"key": "eap_assets/test", "value": "deploy"}]}
        result = self.gql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise DeployTestError(f"launching the {job} backfill: {result['__typename']}: {result.get('message')}")
        backfill_id = result["backfillId"]
        log(f"{job}: backfill {backfill_id} of {len(partitions)} partitions launched")
        last, runs, status = None, [], "REQUESTED"
        deadline = start + timeout
        while True:
            for service in self.services:
                if not service.alive():
                    raise DeployTestError(f"{service.name} died during the {job} backfill:\n{service.log_tail()}")
            backfill = self.gql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
            status = backfill.get("status", backfill["__typename"])
            runs = self._runs({"tags": [{"key": "dagster/backfill", "value": backfill_id}]})
            counts = {s: sum(r["status"] == s for r in runs) for s in sorted({r["status"] for r in runs})}
            summary = f"{status}; runs {', '.join(f'{n} {s.lower()}' for s, n in counts.items()) or 'none yet'}"
            if summary != last:
                log(f"{job}: {summary} ({time.monotonic() - start:.0f} s)")
                last = summary
            finished = all(r["status"] in TERMINAL_RUN_STATUSES for r in runs)
            if finished and (len(runs) == len(partitions) or status in TERMINAL_BACKFILL_STATUSES):
                break
            if time.monotonic() > deadline:
                raise DeployTestError(f"{job} backfill not finished after {timeout:.0f} s: {summary}")
            time.sleep(3)
        outcome = BackfillOutcome(job, backfill_id, runs, time.monotonic() - start)
        if backfill.get("error"):
            outcome.failures.append(f"backfill error: {backfill['error']['message']}")
        for run in runs:
            events = self.gql(RUN_EVENTS, {"id": run["runId"]})["runOrError"]["eventConnection"]["events"]
            for event in events:
                if event["__typename"] == "AssetCheckEvaluationEvent":
                    evaluation = event["evaluation"]
                    if evaluation["success"]:
                        outcome.checks_passed += 1
                    else:
                        outcome.checks_failed.append(f"{_partition(run)}: {evaluation['checkName']}: "
                                                     f"{evaluation['description']}")
                elif event["__typename"] == "ExecutionStepFailureEvent":
                    outcome.failures.append(f"{_partition(run)}: step {event['stepKey']}: "
                                            f"{(event['error'] or {}).get('message', '').strip()[:1500]}")
        return outcome

    def _runs(self, run_filter: dict) -> list[dict]:
        result = self.gql(RUNS, {"filter": run_filter})["runsOrError"]
        if result["__typename"] != "Runs":
            raise DeployTestError(f"listing runs: {result.get('message')}")
        return result["results"]

    def materialized(self, asset: str) -> dict:
        node = self.gql(PARTITION_STATS, {"path": [asset]})["assetNodeOrError"]
        if node["__typename"] != "AssetNode":
            raise DeployTestError(f"asset {asset}: {node['__typename']}")
        return node["partitionStats"]

    # -- stop -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop runs still in progress, then every server (newest first), then Postgres."""
        if self.gql is not None and any(s.name == "webserver" and s.alive() for s in self.services):
            with contextlib.suppress(Exception):
                unfinished = [r["runId"] for r in self._runs({"statuses": ["QUEUED", "NOT_STARTED", "STARTING",
                                                                            "STARTED", "CANCELING"]})]
                if unfinished:
                    log(f"terminating {len(unfinished)} unfinished run(s)")
                    self.gql(TERMINATE, {"ids": unfinished})
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception as exc:  # keep stopping the others
                log(f"stopping {service.name}: {type(exc).__name__}: {exc}")
        if self.postgres is not None:
            try:
                self.postgres.stop()
            except Exception as exc:
                log(f"stopping PostgreSQL: {exc}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _partition(run: dict) -> str:
    return next((t["value"] for t in run["tags"] if t["key"] == "dagster/partition"), run["runId"])


def max_overlap(runs: Sequence[dict]) -> int:
    """Most runs that were in progress at the same moment (from their start and end times)."""
    edges = sorted([(r["startTime"], 1) for r in runs if r["startTime"]]
                   + [(r["endTime"], -1) for r in runs if r["startTime"] and r["endTime"]],
                   key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


# --------------------------------------------------------------------------------------------------
# checks of the outcome


def expect_all_succeeded(outcome: BackfillOutcome, n_partitions: int, min_checks: int) -> None:
    problems = []
    if len(outcome.runs) != n_partitions or outcome.succeeded != n_partitions:
        failed = [f"{_partition(r)} {r['status']}" for r in outcome.runs if r["status"] != "SUCCESS"]
        problems.append(f"{outcome.succeeded} of {n_partitions} runs succeeded ({len(outcome.runs)} runs); "
                        f"not: {', '.join(failed[:10])}")
    if outcome.checks_failed:
        problems.append(f"{len(outcome.checks_failed)} asset check(s) failed: {'; '.join(outcome.checks_failed[:5])}")
    if outcome.checks_passed < min_checks:
        problems.append(f"{outcome.checks_passed} asset checks passed, expected at least {min_checks}")
    if problems:
        raise DeployTestError(f"{outcome.job} backfill {outcome.backfill_id}: " + "; ".join(problems)
                              + ("\nstep failures:\n" + "\n".join(outcome.failures[:5]) if outcome.failures else ""))
    log(f"{outcome.job}: {outcome.succeeded}/{n_partitions} runs succeeded, {outcome.checks_passed} asset checks "
        f"passed, {outcome.seconds:.0f} s")


def check_mlflow(uri: str, rotation: str, tasks: Sequence[str], model_run_ids: set[str],
                 artifacts_dir: Path) -> dict[str, int]:
    """The MLflow server holds a finished run per model, evaluation and hold-out, the registered models
    with a champion made by these Dagster runs, and their artefacts in the served store."""
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("eap_assets")
    if experiment is None:
        raise DeployTestError(f"MLflow server {uri}: no experiment 'eap_assets'")
    if not experiment.artifact_location.startswith("mlflow-artifacts:"):
        raise DeployTestError(f"experiment artefacts at {experiment.artifact_location}, not served by the server")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    finished = {(r.data.tags.get("dagster.asset"), r.data.tags.get("dagster.partition"))
                for r in runs if r.info.status == "FINISHED"}
    expected = {("hold_out_cell_type", rotation)} | {(asset, f"{rotation}|{task}") for task in tasks
                                                      for asset in (*MODEL_ASSETS, "evaluation")}
    missing = sorted(expected - finished)
    if missing:
        raise DeployTestError(f"MLflow server {uri}: no finished run for {missing}; has {sorted(finished)}")
    for kind in KINDS:
        for task in tasks:
            name = f"paper_{kind}_SqMEA-10-15_{rotation}_{task}"
            version = client.get_model_version_by_alias(name, "champion")
            if version.run_id not in {r.info.run_id for r in runs}:
                raise DeployTestError(f"{name}@champion (v{version.version}) comes from run {version.run_id}, "
                                      "not one of the experiment's runs")
            if version.tags.get("dagster_run_id") not in model_run_ids:
                raise DeployTestError(f"{name} v{version.version} was not registered by the models_job backfill")
            model_uri = client.get_model_version_download_uri(name, version.version)
            if not mlflow.artifacts.list_artifacts(artifact_uri=model_uri, tracking_uri=uri):
                raise DeployTestError(f"{name} v{version.version}: no model files at {model_uri} on the server")
    evaluations = [r for r in runs if r.data.tags.get("dagster.asset") == "evaluation"]
    for run in evaluations:
        files = {f.path for f in client.list_artifacts(run.info.run_id)}
        if "evaluation.json" not in files:
            raise DeployTestError(f"evaluation run {run.info.run_id}: artefacts {sorted(files)} lack evaluation.json")
    stored = [p for p in artifacts_dir.rglob("*") if p.is_file()]
    if not stored:
        raise DeployTestError(f"the server's artefact store {artifacts_dir} is empty")
    return {"runs": len(runs), "registered models": len(KINDS) * len(tasks), "artefact files": len(stored)}


# --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="", help="comma-separated cell models (default: all 13 BBP models)")
    parser.add_argument("--n-eaps", type=int, default=20, help="accepted EAPs per cell x rotation (default 20)")
    parser.add_argument("--training-rotation", default="norot", help="rotation of the tiny training (default norot)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per backfill (default 1800)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data, databases)")
    return parser.parse_args(argv)


def _raise_on_signal(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def temporary_root(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="eap_test_deploy_"))
    root.chmod(0o755)  # the postgres user must reach its cluster directory inside
    try:
        yield root
    finally:
        if keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_on_signal)
    from eap_assets.core import cells as cell_models
    from eap_assets.core.models import TASKS
    from eap_assets.core.rotations import PAPER_ROTATIONS

    models = cell_models.discover_cell_models()
    found = sorted(models)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()] or found
    unknown = sorted(set(cells) - set(found))
    if unknown:
        raise DeployTestError(f"unknown cell model(s) {unknown}; known: {', '.join(found)}")
    if len({models[c].ei_label for c in cells}) < 2:
        raise DeployTestError(f"--cells {','.join(cells)}: the binary (E/I) task needs an excitatory and an "
                              "inhibitory cell, e.g. L5_BP_bAC217_1,L5_STPC_cADpyr232_1")
    rotations = list(PAPER_ROTATIONS)
    if args.training_rotation not in rotations:
        raise DeployTestError(f"--training-rotation {args.training_rotation!r}: choose one of {', '.join(rotations)}")
    max_runs = yaml.safe_load((DEPLOYMENT / "dagster.yaml").read_text())["concurrency"]["runs"]["max_concurrent_runs"]

    started = time.monotonic()
    timings: dict[str, float] = {}
    with temporary_root(args.keep) as root:
        deployment = Deployment(root)
        try:
            settings = {"data_dir": str(deployment.data), "preset": "quick", "n_eaps": args.n_eaps}
            run_config = {"resources": {"settings": {"config": settings}, "training": {"config": TINY_TRAINING}}}
            deployment.start()
            deployment.add_cell_partitions(cells)
            deployment.set_pool_limits(POOL_LIMITS)
            deployment.stop_sensor("new_cell_models")  # it would add (and simulate) cells not asked for
            log(f"{len(cells)} cell partitions registered; pool limits {POOL_LIMITS}; sensor new_cell_models stopped")
            deployment.start_daemon()
            timings["start services"] = time.monotonic() - started

            outcomes = []
            outcome = deployment.backfill("cell_models_job", cells, run_config, args.timeout)
            expect_all_succeeded(outcome, len(cells), min_checks=len(cells))
            outcomes.append(outcome)

            keys = [f"{cell}|{rotation}" for cell in cells for rotation in rotations]
            outcome = deployment.backfill("eap_datasets_job", keys, run_config, args.timeout)
            expect_all_succeeded(outcome, len(keys), min_checks=8 * len(keys))
            outcomes.append(outcome)
            stats = deployment.materialized("feature_table")
            if stats["numMaterialized"] != len(keys):
                raise DeployTestError(f"feature_table: {stats} materialised partitions, expected {len(keys)}")

            rotation = args.training_rotation
            outcome = deployment.backfill("training_tables_job", [rotation], run_config, args.timeout)
            expect_all_succeeded(outcome, 1, min_checks=2)
            outcomes.append(outcome)
            model_keys = [f"{rotation}|{task}" for task in TASKS]
            outcome = deployment.backfill("models_job", model_keys, run_config, args.timeout)
            expect_all_succeeded(outcome, len(model_keys), min_checks=0)
            outcomes.append(outcome)
            for item in outcomes:
                timings[f"{item.job} ({len(item.runs)} runs)"] = item.seconds

            all_runs = [run for item in outcomes for run in item.runs]
            peak = max_overlap(all_runs)
            if peak > max_runs:
                raise DeployTestError(f"{peak} runs were in progress at once; dagster.yaml allows {max_runs}")
            mlflow_counts = check_mlflow(deployment.mlflow_uri, rotation, TASKS,
                                         {r["runId"] for r in outcomes[-1].runs}, root / "mlartifacts")
            log(f"run queue: at most {peak} runs at once (limit {max_runs}); MLflow server: {mlflow_counts}")
        except BaseException:
            for service in deployment.services:
                log(f"--- last lines of {service.name} ({service.log_path}) ---\n{service.log_tail(25)}")
            raise
        finally:
            stop_start = time.monotonic()
            deployment.close()
            log(f"stopped everything in {time.monotonic() - stop_start:.0f} s")
    total = time.monotonic() - started
    log("PASSED: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
        + f"; total {total:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DeployTestError as error:
        log(f"FAILED: {error}")
        sys.exit(1)
    except KeyboardInterrupt as interrupt:
        log(f"interrupted ({interrupt}); everything started was stopped")
        sys.exit(130)
