"""The whole core pipeline on disk: outputs, reuse of up-to-date outputs, isolation of failures."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np

from eap_assets import cli
from eap_assets.core import eaps
from eap_assets.core.eaps import EAPConfig, EAPDataset
from eap_assets.pipeline import PipelineConfig, eaps_dir, features_path, run_pipeline, templates_path

from .conftest import INTERNEURON, SHORT


def _config(tmp_path, **kw):
    return PipelineConfig(data_dir=tmp_path / "data", cells=(INTERNEURON,), rotations=("norot", "3drot"),
                          stimulus=SHORT, eap=EAPConfig(n_eaps=12), workers=1, **kw)


def test_pipeline_writes_everything_and_reuses_up_to_date_outputs(tmp_path, monkeypatch):
    config = _config(tmp_path)
    rows, failures = run_pipeline(config, log=lambda m: None)
    assert not failures and [r["rotation"] for r in rows] == ["norot", "3drot"]
    assert all(r["computed"] and r["accepted"] == 12 for r in rows)
    data = config.data_dir
    assert templates_path(data, INTERNEURON).exists()
    images = np.load(features_path(data, INTERNEURON, "3drot"))
    assert images.shape == (12, 10, 10, 2)
    ds = EAPDataset.load(eaps_dir(data, INTERNEURON, "3drot"))
    assert ds.provenance["templates"]["neuron"].startswith("9.")
    outputs = [eaps_dir(data, INTERNEURON, "norot") / "eaps.npy", features_path(data, INTERNEURON, "norot")]
    mtimes = [p.stat().st_mtime_ns for p in outputs]

    again, _ = run_pipeline(config, log=lambda m: None)
    assert not any(r["computed"] for r in again)
    assert [p.stat().st_mtime_ns for p in outputs] == mtimes  # neither EAPs nor features rewritten
    features_path(data, INTERNEURON, "norot").unlink()
    run_pipeline(config, log=lambda m: None)
    assert features_path(data, INTERNEURON, "norot").exists()  # a missing feature file is remade

    changed, _ = run_pipeline(replace(config, eap=EAPConfig(n_eaps=12, seed=1)), log=lambda m: None)
    assert all(r["computed"] for r in changed)  # a different seed is different data: never silently reused
    monkeypatch.setattr(eaps, "CODE_VERSION", "eaps-test")
    newer, _ = run_pipeline(replace(config, eap=EAPConfig(n_eaps=12, seed=1)), log=lambda m: None)
    assert all(r["computed"] for r in newer)  # outputs of older code are not reused either
    assert not [p for p in data.rglob("*.tmp")]


def test_one_failing_cell_leaves_the_others_done(models, tmp_path):
    folder = tmp_path / "models" / "L5_MC_broken_1"
    shutil.copytree(models[INTERNEURON].path, folder, ignore=shutil.ignore_patterns("__pycache__"))
    next((folder / "morphology").glob("*.asc")).write_text("(garbage\n")
    config = replace(_config(tmp_path), cells=(INTERNEURON, "L5_MC_broken_1"), model_folders=(folder.parent,),
                     rotations=("zrot",))
    rows, failures = run_pipeline(config, log=lambda m: None)
    assert [r["cell"] for r in rows] == [INTERNEURON]
    assert list(failures) == ["L5_MC_broken_1"] and "morphology" in failures["L5_MC_broken_1"]
    assert not (config.data_dir / "templates" / "L5_MC_broken_1.npz").exists()


def test_cli_run_quick_for_one_cell(tmp_path, capsys):
    code = cli.main(["run", "--quick", "--cells", INTERNEURON, "--rotations", "xrot", "--n-eaps", "5",
                     "--workers", "1", "--data-dir", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert code == 0 and "results under" in out
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["failures"] == {} and summary["rows"][0]["accepted"] == 5
