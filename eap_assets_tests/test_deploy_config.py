"""The production configuration: deployment/dagster.yaml against the installed Dagster's schema,
the executor switch, the per-asset Kubernetes resource tags, and a run with one process per step
(what one pod per step does on Kubernetes). The full deployment runs in ``make test-deploy``."""

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from eap_assets import definitions
from eap_assets.defs import tags

DEPLOYMENT = Path(__file__).resolve().parents[1] / "deployment"


def test_production_dagster_yaml_sets_the_queue_the_pools_and_postgres():
    """What deployment/dagster.yaml promises; that the installed Dagster accepts it is proven by
    ``make test-deploy``, which starts dagster-webserver and dagster-daemon on this file and Postgres
    (read here with yaml only: Dagster's instance-config loader is private API)."""
    config = yaml.safe_load((DEPLOYMENT / "dagster.yaml").read_text())
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 2
    assert config["concurrency"]["pools"]["granularity"] == "op"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    storage = config["storage"]["postgres"]["postgres_db"]
    assert {key for key in storage} >= {"hostname", "username", "password", "db_name", "port"}
    secrets = {key: value for key, value in storage.items() if key != "scheme"}
    assert all(set(value) == {"env"} for value in secrets.values()), "hosts and credentials come from the environment"


def test_workspace_and_helm_values_parse():
    workspace = yaml.safe_load((DEPLOYMENT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["location_name"] == "eap_assets"
    values = yaml.safe_load((DEPLOYMENT / "helm" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["EAP_ASSETS_EXECUTOR"] == "k8s"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert len(list(yaml.safe_load_all((DEPLOYMENT / "helm" / "storage-and-mlflow.yaml").read_text()))) == 4


def test_executor_switch(monkeypatch):
    monkeypatch.delenv(definitions.ENV_EXECUTOR, raising=False)
    assert definitions.select_executor() is dg.in_process_executor
    monkeypatch.setenv(definitions.ENV_EXECUTOR, "multiprocess")
    assert definitions.select_executor() is dg.multiprocess_executor
    with pytest.raises(ValueError, match="unknown executor; choose one of in_process, multiprocess, k8s"):
        definitions.select_executor("celery")
    assert definitions.defs.resolve_job_def("models_job").executor_def.name in ("in_process", "multiprocess")


def test_k8s_executor_is_optional(monkeypatch):
    try:
        import dagster_k8s  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'eap_assets\[k8s\]'"):
            definitions.select_executor("k8s")
        return
    assert definitions.select_executor("k8s").name == "k8s"
    built = definitions.build_definitions(executor="k8s")
    assert built.resolve_job_def("eap_datasets_job").executor_def.name == "k8s"


def test_every_asset_has_k8s_resources():
    resources, pools = {}, {}
    for assets_def in definitions.defs.resolve_asset_graph().assets_defs:
        if isinstance(assets_def, dg.AssetChecksDefinition) or not assets_def.keys:
            continue  # asset checks run with the executor's default step resources
        config = assets_def.op.tags.get("dagster-k8s/config")
        for key in assets_def.keys:  # a multi-asset's keys share its op
            name = key.to_user_string()
            assert config is not None, f"asset {name} has no dagster-k8s/config op tag"
            resources[name] = json.loads(config)["container_config"]["resources"]
            pools[name] = assets_def.op.pool
    assert len(resources) == 26 + 10  # with the observable sources
    assert resources["cell_model_files"] == resources["cnn_recipe"] == tags.RESOURCES["observe"]
    assert resources["generalisation"] == tags.RESOURCES["generalisation"]
    assert resources["morphology_variants"] == tags.RESOURCES["variants"]
    assert resources["spike_templates"] == resources["cell_model"] == tags.RESOURCES["neuron"]
    assert resources["cnn_model"] == tags.RESOURCES["tensorflow"]
    assert pools["cell_model"] == pools["spike_templates"] == "neuron"
    assert pools["cnn_model"] == pools["lgbm_model"] == pools["waveform_model"] == "training"
    with pytest.raises(ValueError, match="unknown kind of work 'gpu'"):
        tags.k8s_op_tags("gpu")


def test_k8s_tags_are_read_by_dagster_k8s():
    """dagster-k8s is in the test extra: its own parser reads the tags, and the switch selects its executor."""
    from dagster_k8s import job, k8s_job_executor

    config = job.get_user_defined_k8s_config(tags.k8s_op_tags("neuron"))
    assert config.container_config["resources"]["requests"]["memory"] == "2Gi"
    assert definitions.select_executor("k8s") is k8s_job_executor


@pytest.mark.slow
def test_one_process_per_step(tmp_path, monkeypatch):
    """cell_models_job and eap_datasets_job with the multiprocess executor: every asset and check in a
    process of its own, exchanging artefacts only through the data directory and the instance, as
    steps in separate pods do."""
    cell, rotation = "L5_BP_bAC217_1", "norot"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv(definitions.ENV_EXECUTOR, "multiprocess")  # read by the step processes too
    monkeypatch.setenv("EAP_ASSETS_PRESET", "quick")
    monkeypatch.setenv("EAP_ASSETS_DATA_DIR", str(tmp_path / "data"))
    run_config = {"resources": {"settings": {"config": {"data_dir": str(tmp_path / "data"), "preset": "quick",
                                                        "n_eaps": 5}}},
                  "execution": {"config": {"max_concurrent": 2}}}
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        instance.add_dynamic_partitions("cell_model", [cell])
        for job, partition in (("cell_models_job", cell), ("eap_datasets_job", f"{cell}|{rotation}")):
            result = dg.execute_job(dg.reconstructable(_job_factory(job)), instance=instance, run_config=run_config,
                                    tags={"dagster/partition": partition})
            assert result.success, [e.message for e in result.all_events if e.is_failure]
            processes = {e.pid for e in result.all_events if e.step_key}
            assert len(processes) > 1, f"{job}: steps shared one process"
    assert (tmp_path / "data" / "feature_table" / cell / f"{rotation}.parquet").exists()


def _job_factory(name: str):
    return {"cell_models_job": _cell_models_job, "eap_datasets_job": _eap_datasets_job}[name]


def _cell_models_job():
    return definitions.build_definitions().resolve_job_def("cell_models_job")


def _eap_datasets_job():
    return definitions.build_definitions().resolve_job_def("eap_datasets_job")


def test_local_dagster_yaml_is_accepted_and_dequeues_every_second(tmp_path):
    """The local instance's dagster.yaml (``make run``, ``make ui``) loads in the installed Dagster: the run
    queue takes a run within a second of a slot freeing (the 5 s default idled the cores between short runs)."""
    from eap_assets import local

    (tmp_path / "dagster.yaml").write_text(local.local_dagster_yaml(3))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 3
