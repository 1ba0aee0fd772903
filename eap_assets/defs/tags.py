"""Kubernetes resources per asset: ``dagster-k8s/config`` op tags by kind of work.

The tags are inert unless steps run as Kubernetes pods (``EAP_ASSETS_EXECUTOR=k8s`` selects
``dagster_k8s.k8s_job_executor``, see :func:`eap_assets.definitions.select_executor`): then each
step's pod requests what its kind of work needs, and the scheduler packs pods onto nodes by it.
With the default in-process executor (``make run``, ``make ui``, docker compose) they are ignored.
"""


import json

#: Container resources per kind of work, as Kubernetes quantities. No CPU limit (no throttling):
#: every stage is single-threaded (NEURON; BLAS, TensorFlow and LightGBM with ``threads=1``).
RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    # NEURON: compile + instantiate, then 1.2 s simulations; TTPC1 (1325 segments) peaks at ~1.5 GB
    "neuron": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "3Gi"}},
    # line-source EAPs + feature table of one cell x rotation: ~0.5 GiB at paper scale (1000 EAPs)
    "eaps": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    # per-rotation tables (13 000 rows x 230 columns at paper scale), LightGBM fits, report
    "tables": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    # TensorFlow: the CNN (batches of 1000 images) and the evaluation that loads it
    "tensorflow": {"requests": {"cpu": "1", "memory": "3Gi"}, "limits": {"memory": "4Gi"}},
    # generalisation of one rotation x task: a pass over every cell's EAPs (one cell at a time) into feature
    # matrices (~1 GB with variants at paper scale), then LightGBM / CNN / waveform trainings on them
    "generalisation": {"requests": {"cpu": "1", "memory": "3Gi"}, "limits": {"memory": "5Gi"}},
    # morphology variants: copy model folders, rewrite their .asc files (seconds, a few MB)
    "variants": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    # observing a source (eap_assets.defs.sources): hashing settings, or the files of the model folders
    "observe": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
}


def k8s_op_tags(kind: str) -> dict[str, str]:
    """Op tags giving an asset's step pod the resources of ``kind`` (a key of :data:`RESOURCES`).

    Parameters
    ----------
    kind : str
        A key of :data:`RESOURCES`: ``neuron``, ``eaps``, ``tables``, ``tensorflow``, ``generalisation``,
        ``variants`` or ``observe``.

    Returns
    -------
    dict
        ``{"dagster-k8s/config": <JSON of {"container_config": {"resources": ...}}>}``, the form
        ``dagster_k8s`` reads from op tags.

    Raises
    ------
    ValueError
        For an unknown kind, naming the known ones.
    """
    if kind not in RESOURCES:
        raise ValueError(f"unknown kind of work {kind!r}; choose one of {', '.join(RESOURCES)}")
    return {"dagster-k8s/config": json.dumps({"container_config": {"resources": RESOURCES[kind]}})}
