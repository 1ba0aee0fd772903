"""Probes beyond the paper's MEA: staggered layouts as images, probeinterface files, the probe's
placement box and medium, and clear errors for probe files that cannot be used."""

import json
import os

import numpy as np
import probeinterface
import pytest

from eap_assets.core import features
from eap_assets.core.eaps import EAPConfig, EAPEngine, contact_peak_to_peak, simulate_eap_dataset
from eap_assets.core.probe import (ProbeError, ProbeGeometryError, get_probe, placement_box, probe_grid,
                                   probe_name)
from eap_assets.core.recording import RecordingSpec
from eap_assets.core.stages import eaps_key


def _silicon_probe(path, x_shift: float = 0.0):
    """A 32-channel silicon probe (2 staggered columns of 16, 25 µm pitch) as a probeinterface JSON file."""
    probe = probeinterface.generate_multi_columns_probe(num_columns=2, num_contact_per_column=16, xpitch=22,
                                                       ypitch=25, y_shift_per_column=[0, 12.5])
    probe.move([x_shift, 0.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    probeinterface.write_probeinterface(path, probe)
    return path


@pytest.mark.parametrize("name, shape", [("Neuronexus-32", (22, 3)), ("Neuropixels-1.0", (192, 4)),
                                         ("SqMEA-10-15", (10, 10))])
def test_layouts_become_images_with_filled_holes(name, shape):
    grid = probe_grid(name)
    probe = get_probe(name)
    assert grid.shape == shape
    values = np.random.default_rng(0).uniform(1, 2, size=(3, probe.n_contacts))
    image = grid.to_image(values)
    # every contact's value is in its own cell
    assert np.array_equal(image[:, grid.row, grid.col], values)
    holes = grid.hole_row.size
    assert holes == shape[0] * shape[1] - probe.n_contacts
    if holes:  # a hole holds the mean of the contacts around it: between their extremes, never 0
        filled = image[:, grid.hole_row, grid.hole_col]
        assert np.all(filled >= 1) and np.all(filled <= 2)
        r, c = grid.hole_row[0], grid.hole_col[0]
        around = [image[:, r + dr, c + dc] for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
                  if 0 <= r + dr < shape[0] and 0 <= c + dc < shape[1]
                  and np.any((grid.row == r + dr) & (grid.col == c + dc))]
        assert np.allclose(image[:, r, c], np.mean(around, axis=0))


def test_probe_kinds_media_and_boxes():
    assert get_probe("SqMEA-10-15").kind == "mea" and get_probe("SqMEA-10-15").default_medium == "mea_plane"
    assert get_probe("SqMEA-10-15").default_rotation == get_probe("tetrode").default_rotation == "3drot"
    for shank in ("Neuropixels-1.0", "Neuronexus-32", "Neuropixels-24"):
        probe = get_probe(shank)
        assert probe.kind == "shank" and probe.default_medium == "infinite" and probe.default_rotation == "physrot"
        assert np.ptp(probe.positions[:, 2]) > 3 * np.ptp(probe.positions[:, 1])  # long axis z: physrot's polar axis
    # the paper's box comes out of SqMEA-10-15's contacts
    assert placement_box("SqMEA-10-15") == ((10.0, 60.0), (-75.0, 75.0), (-75.0, 75.0))
    (_, _), y, z = placement_box("Neuropixels-1.0")
    assert z[1] - z[0] > 3800 and y[1] - y[0] == 48 + 15  # the whole shank, 7.5 µm beyond its outer contacts
    # a MEAutility probe outside the plane x = 0 (the tetrode lies in xy) is put in it, so the box is in front of it
    tetrode = get_probe("tetrode")
    assert np.allclose(tetrode.positions[:, 0], 0.0) and sorted(np.ptp(tetrode.positions, axis=0)) == [0, 16, 16]
    assert placement_box("tetrode") == ((10.0, 60.0), (-15.5, 15.5), (-15.5, 15.5))
    neuropixels = get_probe("Neuropixels-1.0").plane_positions
    assert neuropixels.shape == (384, 2) and sorted(np.unique(neuropixels[:, 0]).tolist()) == [-24, -8, 8, 24]
    assert np.allclose(np.unique(np.diff(np.unique(neuropixels[:, 1]))), 20.0)


def test_probe_file_is_read_named_by_its_contacts_and_keys_follow_them(tmp_path):
    path = _silicon_probe(tmp_path / "silicon32.json")
    probe = get_probe(str(path))
    assert probe.n_contacts == 32 and probe.kind == "shank"
    assert probe.name.startswith("silicon32-") and probe_name(str(path)) == probe.name
    assert np.allclose(probe.positions[:, 0], 0.0) and np.allclose(probe.normal, [1, 0, 0])
    assert probe_grid(str(path)).shape == (32, 2)
    # a translated copy of the layout is the same probe (positions are centred) ...
    assert get_probe(str(_silicon_probe(tmp_path / "moved" / "silicon32.json", x_shift=500.0))).name == probe.name
    config = EAPConfig(probe=str(path), n_eaps=5)
    key, spec_key = eaps_key(config, "templates-key"), RecordingSpec(probe=str(path)).key()
    # ... a changed layout under the same path is another probe: new name, new artefact keys
    wider = probeinterface.generate_multi_columns_probe(num_columns=2, num_contact_per_column=16, xpitch=30,
                                                        ypitch=25, y_shift_per_column=[0, 12.5])
    probeinterface.write_probeinterface(path, wider)
    assert get_probe(str(path)).name != probe.name
    assert eaps_key(config, "templates-key") != key and RecordingSpec(probe=str(path)).key() != spec_key
    assert probe_grid(str(path)).shape == (32, 2)


def test_a_shank_file_lying_along_x_is_turned_so_that_cells_stand_along_it(tmp_path):
    """``physrot`` keeps polar cells near z, so a shank must lie along z whatever axis its file uses."""
    upright = get_probe(str(_silicon_probe(tmp_path / "upright.json")))
    lying = probeinterface.generate_multi_columns_probe(num_columns=2, num_contact_per_column=16, xpitch=22,
                                                        ypitch=25, y_shift_per_column=[0, 12.5])
    lying.set_contacts(positions=lying.contact_positions[:, ::-1])  # the same shank, its long axis along x
    probeinterface.write_probeinterface(tmp_path / "lying.json", lying)
    turned = get_probe(str(tmp_path / "lying.json"))
    assert turned.kind == "shank" and turned.default_rotation == "physrot"
    assert np.ptp(turned.positions[:, 2]) == pytest.approx(np.ptp(upright.positions[:, 2]))
    assert np.ptp(turned.positions[:, 1]) == pytest.approx(np.ptp(upright.positions[:, 1]))


def test_recording_rotations_follow_the_deployment_probe(tmp_path, monkeypatch):
    """The models for real recordings are trained on cells along the shank for a shank (physrot) and in
    any orientation for an MEA (3drot): from the instance's settings file (the last run's probe), the
    run's probe in the command line, or $EAP_ASSETS_RECORDING_ROTATIONS when set."""
    from eap_assets import cli
    from eap_assets.defs.partitions import ENV_RECORDING_ROTATIONS, deployment_probe, recording_rotations

    monkeypatch.delenv(ENV_RECORDING_ROTATIONS, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    assert deployment_probe(home) == "SqMEA-10-15" and recording_rotations(home=home) == ["3drot"]
    (home / "eap_assets_settings.json").write_text(json.dumps({"settings": {"probe": "Neuronexus-32"}}))
    assert deployment_probe(home) == "Neuronexus-32" and recording_rotations(home=home) == ["physrot"]
    assert recording_rotations("SqMEA-10-15", home) == ["3drot"]
    (home / "eap_assets_settings.json").write_text(json.dumps({"settings": {"probe": str(tmp_path / "gone.json")}}))
    with pytest.raises(ProbeError, match=f"follow the probe .*gone.json.* does not exist; set {ENV_RECORDING_ROTATIONS}"):
        recording_rotations(home=home)
    monkeypatch.setenv(ENV_RECORDING_ROTATIONS, "3drot,physrot")  # the override wins
    assert recording_rotations(home=home) == ["3drot", "physrot"]
    monkeypatch.delenv(ENV_RECORDING_ROTATIONS)
    # `make run --probe P` launches its runs (and the code location it starts) with P's rotation set, then restores
    with cli._recording_rotations_of("Neuropixels-24"):
        assert recording_rotations(home=home) == ["physrot"]
    assert ENV_RECORDING_ROTATIONS not in os.environ
    monkeypatch.setenv(ENV_RECORDING_ROTATIONS, "3drot")
    with cli._recording_rotations_of("Neuropixels-24"):
        assert recording_rotations(home=home) == ["3drot"]


def test_bad_probe_files_and_names_are_named_in_the_error(tmp_path):
    with pytest.raises(ProbeError, match="does not exist"):
        get_probe(str(tmp_path / "missing.json"))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(ProbeError, match=r"garbage\.json.*could not be read as a probeinterface probe"):
        get_probe(str(garbage))
    # contacts out of one plane
    bent = probeinterface.Probe(ndim=3, si_units="um")
    bent.set_contacts(positions=np.array([[0, 0, 0], [0, 20, 0], [0, 0, 20], [30, 30, 30.0]]), plane_axes=np.tile(
        np.eye(3)[:2], (4, 1, 1)), shapes="circle", shape_params={"radius": 5})
    probeinterface.write_probeinterface(tmp_path / "bent.json", bent)
    with pytest.raises(ProbeError, match=r"bent\.json.*not in one plane"):
        get_probe(str(tmp_path / "bent.json"))
    # two probes in one file
    group = probeinterface.ProbeGroup()
    for shift in (0.0, 300.0):
        p = probeinterface.generate_linear_probe(num_elec=8, ypitch=20)
        p.move([shift, 0.0])
        group.add_probe(p)
    probeinterface.write_probeinterface(tmp_path / "two.json", group)
    with pytest.raises(ProbeError, match=r"two\.json.*holds 2 probes"):
        get_probe(str(tmp_path / "two.json"))
    # two contacts on one spot
    doubled = json.loads((_silicon_probe(tmp_path / "ok.json")).read_text())
    doubled["probes"][0]["contact_positions"][1] = doubled["probes"][0]["contact_positions"][0]
    (tmp_path / "doubled.json").write_text(json.dumps(doubled))
    with pytest.raises(ProbeError, match=r"doubled\.json.*positions must be unique"):  # probeinterface says so
        get_probe(str(tmp_path / "doubled.json"))
    # contacts scattered with no common rows or columns: a probe, but no image
    scattered = probeinterface.Probe(ndim=2, si_units="um")
    scattered.set_contacts(positions=np.random.default_rng(0).uniform(0, 200, size=(16, 2)), shapes="circle",
                           shape_params={"radius": 5})
    probeinterface.write_probeinterface(tmp_path / "scattered.json", scattered)
    assert get_probe(str(tmp_path / "scattered.json")).n_contacts == 16
    with pytest.raises(ProbeError, match="make no image grid"):
        probe_grid(str(tmp_path / "scattered.json"))
    with pytest.raises(ProbeError, match="'NoSuchProbe' is neither a MEAutility probe.*Neuropixels-1.0"):
        get_probe("NoSuchProbe")


def test_eaps_features_and_images_on_a_probe_file_and_neuropixels(bp_templates, tmp_path):
    """The whole simulation path on probes that are not grids: real EAPs of the BP cell, feature
    table, images that a CNN takes; the engine's potentials obey the probe's geometry."""
    path = str(_silicon_probe(tmp_path / "silicon32.json"))
    for spec, shape in ((path, (32, 2)), ("Neuropixels-1.0", (192, 4))):
        x_range, y_range, z_range = placement_box(spec)
        config = EAPConfig(probe=spec, n_eaps=12, rotation="3drot", seed=1, x_range=x_range, y_range=y_range,
                           z_range=z_range)
        dataset = simulate_eap_dataset(bp_templates, config, mtype="BP")
        n_contacts = get_probe(spec).n_contacts
        assert dataset.eaps.shape == (12, n_contacts, bp_templates.n_samples)
        table = features.feature_table(dataset, "BP", excitatory=False)
        images = features.images_from_table(table, spec)
        assert images.shape == (12, *shape, 2) and np.all(np.isfinite(images))
        # the largest amplitude sits on the contact nearest the soma
        nearest = np.argmin(np.linalg.norm(get_probe(spec).positions[None] - dataset.positions[:, None], axis=2),
                            axis=1)
        amplitude = table[[f"amp_c{c:03d}" for c in range(n_contacts)]].to_numpy()
        near = np.linalg.norm(get_probe(spec).positions[np.argmax(amplitude, axis=1)] - dataset.positions, axis=1)
        assert np.median(near - np.linalg.norm(get_probe(spec).positions[nearest] - dataset.positions, axis=1)) < 30
    # the medium doubles the potential of the same placements
    engine = EAPEngine(bp_templates, path, medium="infinite")
    plane = EAPEngine(bp_templates, path, medium="mea_plane")
    args = (np.tile(np.eye(3), (2, 1, 1)), np.array([[20.0, 0, 0], [40.0, 0, 100]]), np.array([0, 1]))
    assert np.allclose(plane.compute(*args), 2 * engine.compute(*args), rtol=1e-5, atol=1e-4)


def test_a_window_of_a_long_shank_is_the_model_probe_moved_along_it(bp_templates):
    """A unit on a 384-contact Neuropixels 1.0 shank, read on the window of a 24-contact section
    (``Neuropixels-24``) that holds most of its signal, is exactly the EAP of the same cell moved
    by the window's offset under the section itself: what a model trained on the section expects."""
    from eap_assets.core.probe import unit_windows, window_orders

    shank, section = get_probe("Neuropixels-1.0"), get_probe("Neuropixels-24")
    orders = window_orders(shank.positions, "Neuropixels-24")
    assert orders.shape == (90, 24)  # a placement every 2 rows (the stagger's period) along 192 rows
    rng = np.random.default_rng(4)
    positions = np.column_stack([rng.uniform(15, 40, 6), rng.uniform(-20, 20, 6), rng.uniform(-1700, 1700, 6)])
    rotations = np.tile(np.eye(3), (6, 1, 1))
    spikes = np.zeros(6, dtype=int)
    full = EAPEngine(bp_templates, "Neuropixels-1.0", dtype=np.float64).compute(rotations, positions, spikes)
    channels = unit_windows(contact_peak_to_peak(full), orders)
    on_section = EAPEngine(bp_templates, "Neuropixels-24", dtype=np.float64)
    for unit in range(6):
        offset = shank.positions[channels[unit]] - section.positions
        assert np.allclose(offset, offset[0], atol=1e-6)  # the window is the section, moved
        # the window is centred on the unit: its soma is within a row pitch of the window's middle
        assert abs(positions[unit, 2] - shank.positions[channels[unit], 2].mean()) <= 40
        moved = on_section.compute(rotations[:1], positions[unit:unit + 1] - offset[0], spikes[:1])[0]
        assert np.allclose(full[unit, channels[unit]], moved, rtol=1e-9, atol=1e-9)
    with pytest.raises(ProbeGeometryError, match=r"'SqMEA-10-15' \(100 contacts\) fits nowhere"):
        window_orders(shank.positions, "SqMEA-10-15")


def test_the_per_probe_table_puts_probes_side_by_side(tmp_path):
    from eap_assets import cli
    from eap_assets.core.report import probe_comparison_markdown

    def record(probe, contacts, binary, served):
        return {"probe": probe, "contacts": contacts, "kind": "mea", "image": "10×10", "rotation": "3drot",
                "n_eaps": 1000, "contacts_30uv": 6.0, "contacts_10uv": 20.0,
                "paper": {"binary": {"cnn": binary, "lgbm": binary + 1}, "mtype": {"cnn": 80.0}},
                "classifier": {"binary": {"kind": "waveform", "accuracy": served, "ece": 0.02,
                                          "registered": "v2 (champion)",
                                          "kinds": {"cnn": served - 10, "waveform": served},
                                          "by_rotation": {"3drot": served - 2, **({"physrot": served} if
                                                                                   contacts == 32 else {})}}}}

    text, frame = probe_comparison_markdown([record("SqMEA-10-15", 100, 95.0, 97.5),
                                             record("Neuronexus-32", 32, 90.0, 91.0)])
    assert list(frame.index) == ["SqMEA-10-15", "Neuronexus-32"]
    assert frame.loc["Neuronexus-32", "binary: LightGBM (noise-free) %"] == 91.0
    assert frame.loc["SqMEA-10-15", "binary: unit classifier (realistic) %"] == 97.5
    assert frame.loc["Neuronexus-32", "binary: CNN (realistic) %"] == 81.0  # every kind trained for recordings
    assert frame.loc["Neuronexus-32", "binary: unit classifier version"] == "v2 (champion)"
    # every rotation set side by side: the shank's physrot beside the 3drot that every probe has
    assert frame.loc["Neuronexus-32", "binary: unit classifier on physrot (realistic) %"] == 91.0
    assert frame.loc["Neuronexus-32", "binary: unit classifier on 3drot (realistic) %"] == 89.0
    assert np.isnan(frame.loc["SqMEA-10-15", "binary: unit classifier on physrot (realistic) %"])
    assert "mtype: unit classifier (realistic) %" not in frame.columns  # no served m-type classifier in the records
    assert text.splitlines()[0] == "| probe | SqMEA-10-15 | Neuronexus-32 |"
    with pytest.raises(FileNotFoundError, match="no training table for 3drot"):
        cli.main(["probes-report", str(tmp_path), "--out", str(tmp_path / "probes.md")])


def test_run_refuses_a_bad_probe_before_any_work(tmp_path, capsys):
    from eap_assets import cli

    (tmp_path / "garbage.json").write_text("{not json")
    code = cli.main(["run", "--quick", "--probe", str(tmp_path / "garbage.json"), "--data-dir", str(tmp_path / "data")])
    assert code == 2 and "garbage.json' could not be read as a probeinterface probe" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
    assert cli.main(["run", "--quick", "--probe", "NoSuchProbe", "--data-dir", str(tmp_path / "data")]) == 2


def test_run_refuses_an_unknown_recording_protocol_or_kind_before_any_work(tmp_path, capsys):
    from eap_assets import cli

    code = cli.main(["run", "--quick", "--recording-protocols", "own_split,unseen_morphologies",
                     "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and "--recording-protocols" in err and "unseen_morphologies" in err and "hold_out_type" in err
    assert cli.main(["run", "--quick", "--recording-generalisation-kinds", "svm", "--data-dir",
                     str(tmp_path / "data")]) == 2
    assert "'svm'" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_a_window_follows_the_unit_not_the_noise_of_other_channels():
    """Channels that see only noise count as nothing: a unit on channel 2 of a line of 6 gets the window
    around it, not the one that adds two more noisy channels (the plain sum of squares would pick [2, 3, 4])."""
    from eap_assets.core.probe import unit_windows

    orders = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]])
    amplitude = np.array([[0.0, 0.0, 10.0, 3.2, 3.0, 3.1]])
    assert unit_windows(amplitude, orders).tolist() == [[1, 2, 3]]
    assert orders[np.argmax((amplitude ** 2)[:, orders].sum(axis=-1))].tolist() == [2, 3, 4]


def test_a_classifier_of_a_probe_file_carries_the_file_into_the_registry(tmp_path):
    """A unit classifier trained on a probeinterface file is picked and served by geometry after the file
    is gone (another machine, a moved file): the registered model holds a copy of it."""
    import mlflow

    from eap_assets import registry
    from eap_assets.core import models
    from eap_assets.core.calibration import OODReference
    from eap_assets.core.classifier import UnitClassifier, kind_input
    from eap_assets.core.units import Units
    from eap_assets.serving import classify_units, pick_classifier, rotation_preference

    path = _silicon_probe(tmp_path / "probes" / "silicon32.json")
    name_before = probe_name(str(path))
    spec = RecordingSpec(probe=str(path))
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(60, 32, spec.n_samples)).astype(np.float32)
    windows[:, 5, spec.n_samples // 3] -= 80.0  # a trough on one contact, as the mapping aligns them
    y = np.arange(60) % 2
    x = kind_input("lgbm", windows, spec)
    fitted = models.train_lgbm(x, y, x, y, 2, models.LGBMConfig(n_estimators=3, early_stopping_rounds=None), 0,
                               ["E", "I"]).model
    ood = OODReference.fit(np.full(60, 80.0), np.zeros(60), np.zeros(32, bool), np.zeros(32 * spec.n_samples),
                           np.zeros((1, 32 * spec.n_samples)))
    classifier = UnitClassifier(kind="lgbm", task="binary", model=fitted, classes=["E", "I"], spec=spec, ood=ood)
    registry.configure(registry.default_tracking_uri(tmp_path / "mlflow"), "probe-file")
    name = registry.classifier_name(str(path), "3drot", "binary")
    with mlflow.start_run():
        version = registry.log_classifier(classifier, name, windows[:2], tags={
            "kind": registry.CLASSIFIER_KIND, "task": "binary", "rotation": "3drot", "probe": str(path)})
    registry.promote(name, version.version, 1.0)
    physrot = registry.classifier_name(str(path), "physrot", "binary")  # the same, for cells along the shank
    with mlflow.start_run():
        physrot_version = registry.log_classifier(classifier, physrot, windows[:2], tags={
            "kind": registry.CLASSIFIER_KIND, "task": "binary", "rotation": "physrot", "probe": str(path)})
    positions = probeinterface.read_probeinterface(path).probes[0].contact_positions
    (tmp_path / "probes" / "silicon32.json").unlink()  # the file the model was trained on is gone

    order = rng.permutation(32)  # the recording's channels in another order, the probe moved
    units = Units(source="units.npy", unit_ids=np.arange(3), templates=windows[:3, order], fs_hz=32000.0,
                  positions=positions[order] + [300.0, -40.0], filtered=True)
    assert pick_classifier(units, "binary", "3drot") == name == f"unit_classifier_{name_before}_3drot_binary"
    assert pick_classifier(units, "binary") == name  # on a shank physrot comes first; without one, any orientation
    loaded = registry.load_classifier(name)
    assert probe_name(loaded.classifier.spec.probe) == name_before  # the carried copy: same contacts, same name
    answers = classify_units(units, loaded)
    assert (answers["error"] == "").all() and answers["predicted"].isin(["E", "I"]).all()
    assert np.array_equal(answers["peak_channel"], np.flatnonzero(order == 5).repeat(3))

    # once a champion of the shank's own rotation set (cells along the shank) exists, it comes before the 3drot one
    registry.promote(physrot, physrot_version.version, 1.0)
    assert pick_classifier(units, "binary") == physrot and pick_classifier(units, "binary", "3drot") == name
    mea = Units(source="mea.npy", unit_ids=np.arange(1), templates=np.zeros((1, 100, spec.n_samples)), fs_hz=32000.0,
                positions=get_probe("SqMEA-10-15").plane_positions, filtered=True)
    assert rotation_preference(mea) == ["3drot"] and rotation_preference(units) == ["physrot", "3drot"]
