"""Stages on disk without an orchestrator: reuse of up-to-date artefacts, refusal of stale ones."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from eap_assets.core import cells, eaps, stages
from eap_assets.core.eaps import EAPConfig

from .conftest import INTERNEURON, SHORT


def test_templates_and_eaps_are_reused_only_with_the_same_key(models, tmp_path, monkeypatch):
    model, data = models[INTERNEURON], tmp_path / "data"
    templates, computed = stages.ensure_templates(model, SHORT, data)
    assert computed and stages.stored_key(stages.templates_path(data, model.name)) == stages.templates_key(model, SHORT)
    again, computed = stages.ensure_templates(model, SHORT, data)
    assert not computed and again.provenance["settings_hash"] == templates.provenance["settings_hash"]

    config = EAPConfig(n_eaps=12, rotation="3drot")
    dataset, computed = stages.ensure_eaps(templates, model, config, data)
    folder = stages.eaps_dir(data, model.name, "3drot")
    mtime = (folder / "eaps.npy").stat().st_mtime_ns
    assert computed and dataset.accepted == 12
    assert not stages.ensure_eaps(templates, model, config, data)[1]
    assert (folder / "eaps.npy").stat().st_mtime_ns == mtime  # not rewritten
    assert stages.load_current_eaps(model, config, SHORT, data).accepted == 12

    assert stages.ensure_eaps(templates, model, replace(config, seed=1), data)[1]  # other seed: other data
    with pytest.raises(stages.StaleInputError, match="3drot.*other settings"):
        stages.load_current_eaps(model, config, SHORT, data)  # the stored dataset is now the seed-1 one
    monkeypatch.setattr(eaps, "CODE_VERSION", "eaps-test")
    assert stages.ensure_eaps(templates, model, replace(config, seed=1), data)[1]  # older code: not reused
    assert not list(data.rglob("*.tmp"))


def test_stale_or_missing_templates_are_refused(models, tmp_path):
    model, data = models[INTERNEURON], tmp_path / "data"
    with pytest.raises(stages.StaleInputError, match=f"{INTERNEURON}.*do not exist"):
        stages.load_current_templates(model, SHORT, data)
    stages.ensure_templates(model, SHORT, data)
    with pytest.raises(stages.StaleInputError, match="other settings"):
        stages.load_current_templates(model, replace(SHORT, n_keep=4), data)


def test_edited_model_files_change_the_key(models, tmp_path):
    copy = tmp_path / "models" / INTERNEURON
    shutil.copytree(models[INTERNEURON].path, copy, ignore=shutil.ignore_patterns("__pycache__"))
    model = cells.read_cell_model(copy)
    before = stages.templates_key(model, SHORT)
    assert before == stages.templates_key(models[INTERNEURON], SHORT)  # same files, same key
    (copy / "biophysics.hoc").write_text((copy / "biophysics.hoc").read_text() + "\n// edited\n")
    assert stages.templates_key(model, SHORT) != before


def test_presets():
    assert stages.get_preset("paper").n_eaps == 1000 and stages.get_preset("paper").stimulus.n_keep == 10
    assert stages.get_preset("quick").stimulus == SHORT
    with pytest.raises(ValueError, match="preset 'huge' unknown; choose one of paper, quick"):
        stages.get_preset("huge")
