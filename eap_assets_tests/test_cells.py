"""Cell-model discovery, labels, mechanisms and the bad inputs of the model library."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from eap_assets.core import cells, mechanisms

#: Segments per cell with LFPy's default lambda100 rule (SPEC §1).
SEGMENTS = {"L5_BP_bAC217_1": 245, "L5_BTC_bAC217_1": 190, "L5_ChC_cACint209_1": 298, "L5_DBC_bAC217_1": 239,
            "L5_LBC_bAC217_1": 505, "L5_MC_bAC217_1": 193, "L5_NBC_bAC217_1": 345, "L5_NGC_bNAC219_1": 199,
            "L5_SBC_bNAC219_1": 158, "L5_STPC_cADpyr232_1": 964, "L5_TTPC1_cADpyr232_1": 1325,
            "L5_TTPC2_cADpyr232_1": 1279, "L5_UTPC_cADpyr232_1": 720}


def test_the_13_paper_models_are_found_with_labels(models):
    assert tuple(models) == tuple(sorted(cells.PAPER_CELLS))
    assert {m.mtype for m in models.values() if m.excitatory} == {"STPC", "TTPC1", "TTPC2", "UTPC"}
    assert sum(not m.excitatory for m in models.values()) == 9
    ttpc1 = models["L5_TTPC1_cADpyr232_1"]
    assert (ttpc1.layer, ttpc1.mtype, ttpc1.etype, ttpc1.ei_label) == ("L5", "TTPC1", "cADpyr232", "E")
    assert models["L5_NGC_bNAC219_1"].etype == "bNAC219"
    assert all(m.template_name and m.morphology.suffix == ".asc" for m in models.values())


def test_union_of_mechanisms_has_both_calcium_variants_and_no_synapses(models):
    union = mechanisms.union_of_mod_files({m.name: m.mod_files for m in models.values()})
    assert "Ca.mod" in union and "Ca_HVA.mod" in union
    assert len(union) == 13  # 15 distinct files minus the 2 synapse mechanisms
    assert not {Path(n).stem for n in union} & mechanisms.SYNAPSE_MECHANISMS


@pytest.mark.parametrize("name", sorted(SEGMENTS))
def test_every_model_loads_in_neuron_with_its_segment_count(models, name):
    cell = cells.load_lfpy_cell(models[name], tstop=1.0)
    assert cell.totnsegs == SEGMENTS[name]
    from neuron import h

    assert h.celsius == 34.0  # from the model's constants.hoc


def test_synapses_are_refused_clearly(models):
    from neuron import h

    cells.load_lfpy_cell(models["L5_BP_bAC217_1"], tstop=1.0)
    with pytest.raises(RuntimeError):
        getattr(h, models["L5_BP_bAC217_1"].template_name)(1)  # synapses enabled -> stand-in raises


def test_mechanism_cache_is_reused(models, monkeypatch):
    union = mechanisms.union_of_mod_files({m.name: m.mod_files for m in models.values()})
    first = mechanisms.compile_mechanisms(union)
    assert (first / "COMPLETE").exists() and first.name == mechanisms.mechanisms_hash(union)

    def no_compiler(*args, **kwargs):
        raise AssertionError("nrnivmodl ran again although the library is cached")

    monkeypatch.setattr(mechanisms.subprocess, "run", no_compiler)
    assert mechanisms.compile_mechanisms(union) == first
    changed = dict(union)
    changed.pop("Ca.mod")  # another set of files -> another hash -> would need compiling
    with pytest.raises(AssertionError, match="nrnivmodl ran again"):
        mechanisms.compile_mechanisms(changed, cache_dir=first.parent.parent / "other")


# --- bad inputs -------------------------------------------------------------------------------

def _copy_model(models, tmp_path: Path, name: str = "L5_BP_bAC217_1") -> Path:
    target = tmp_path / name
    shutil.copytree(models[name].path, target, ignore=shutil.ignore_patterns("__pycache__", "x86_64"))
    return target


def test_folder_that_is_not_a_model(tmp_path):
    folder = tmp_path / "L5_BP_bAC217_1"
    folder.mkdir()
    (folder / "template.hoc").write_text("// nothing\n")
    with pytest.raises(cells.CellModelError, match=r"'L5_BP_bAC217_1'.*not a cell model folder.*biophysics.hoc"):
        cells.read_cell_model(folder)
    with pytest.raises(cells.CellModelError, match="does not exist"):
        cells.discover_cell_models([tmp_path / "nowhere"])


def test_unknown_mtype_and_bad_name(models, tmp_path):
    with pytest.raises(cells.CellModelError, match="m-type 'XYZ'"):
        cells.parse_name("L5_XYZ_bAC_1")
    with pytest.raises(cells.CellModelError, match="must look like"):
        cells.parse_name("model")


def test_missing_mod_file_names_model_and_mechanism(models, tmp_path):
    folder = _copy_model(models, tmp_path)
    (folder / "mechanisms" / "Ih.mod").unlink()
    with pytest.raises(cells.CellModelError, match=r"'L5_BP_bAC217_1'.*inserts Ih.*missing Ih.mod"):
        cells.read_cell_model(folder)


def test_mod_file_that_fails_to_compile_names_file_and_model(models, tmp_path):
    folder = _copy_model(models, tmp_path)
    mod = folder / "mechanisms" / "Ih.mod"
    mod.write_text(mod.read_text() + "\nTHIS IS NOT NMODL {{{\n")
    model = cells.read_cell_model(folder)
    with pytest.raises(mechanisms.MechanismError, match=r"Ih\.mod \(cell models: L5_BP_bAC217_1\)"):
        cells.prepare_mechanisms([model], cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "mechanisms").iterdir())  # nothing half-built left behind


def test_conflicting_mod_files_between_models(models, tmp_path):
    folder = _copy_model(models, tmp_path)
    mod = folder / "mechanisms" / "Ih.mod"
    mod.write_text(mod.read_text() + "\n: changed\n")
    with pytest.raises(mechanisms.MechanismError, match="Ih.mod differs between cell models"):
        mechanisms.union_of_mod_files({"original": models["L5_BP_bAC217_1"].mod_files,
                                       "copy": cells.read_cell_model(folder).mod_files})


def test_broken_morphology_names_model_and_file(models, tmp_path):
    folder = _copy_model(models, tmp_path)
    asc = next((folder / "morphology").glob("*.asc"))
    asc.write_text("(garbage (((( not a morphology\n")
    with pytest.raises(cells.CellModelError, match=r"'L5_BP_bAC217_1'.*morphology C240300C1"):
        cells.load_lfpy_cell(cells.read_cell_model(folder), tstop=1.0)
    # the process can still load the intact model afterwards
    assert cells.load_lfpy_cell(models["L5_BP_bAC217_1"], tstop=1.0).totnsegs == 245


def test_two_morphologies_is_an_error(models, tmp_path):
    folder = _copy_model(models, tmp_path)
    asc = next((folder / "morphology").glob("*.asc"))
    shutil.copy(asc, folder / "morphology" / "second.asc")
    with pytest.raises(cells.CellModelError, match="exactly one .asc/.swc"):
        cells.read_cell_model(folder)


def test_user_folder_adds_models(models, tmp_path):
    _copy_model(models, tmp_path, "L5_MC_bAC217_1")
    found = cells.discover_cell_models([tmp_path])
    assert list(found) == ["L5_MC_bAC217_1"] and found["L5_MC_bAC217_1"].path.parent == tmp_path
    with pytest.raises(cells.CellModelError, match="found twice"):
        cells.discover_cell_models([cells.mearec_models_dir(), tmp_path])
