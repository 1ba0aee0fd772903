"""Spike detection, the current search and real spike templates of an interneuron and a pyramidal cell."""

from __future__ import annotations

import numpy as np
import pytest

from eap_assets.core import intracellular as ic

from .conftest import INTERNEURON, SHORT


def test_detect_spikes_finds_peaks_after_upward_crossings():
    dt = 2**-5
    t = np.arange(0, 100, dt)
    v = np.full_like(t, -70.0)
    for centre in (20.0, 50.0, 80.0):
        v += 100 * np.exp(-0.5 * ((t - centre) / 0.3) ** 2)
    peaks = ic.detect_spikes(v, dt)
    assert np.allclose(peaks * dt, [20.0, 50.0, 80.0], atol=dt)
    assert ic.detect_spikes(np.full(100, 10.0), dt).size == 0  # above threshold from the start: no crossing


def test_cut_windows_drops_spikes_too_close_to_the_edges():
    assert ic.cut_windows(np.array([10, 100, 990]), 1000, 64, 160).tolist() == [100]


def test_next_amplitude_brackets_and_interpolates():
    # below only: steps up; above only: steps down; bracketed: stays inside the bracket
    assert ic.next_amplitude([(0.2, 0)], 11, 15) == pytest.approx(0.4)
    assert 0.2 < ic.next_amplitude([(0.2, 5)], 11, 15) <= 0.6
    assert ic.next_amplitude([(0.4, 30)], 11, 15) < 0.4
    nxt = ic.next_amplitude([(0.2, 5), (0.4, 25)], 11, 15)
    assert 0.2 < nxt < 0.4
    assert nxt == pytest.approx(0.2 + (13 - 5) * 0.2 / 20)  # aims at the middle of 11-15


def test_cell_that_cannot_reach_the_target_fails_clearly(models):
    config = ic.StimulusConfig(tstop=100.0, n_keep=3, max_spikes=12, initial_amp=0.0, max_tries=1)
    with pytest.raises(ic.SpikeTargetError, match=r"'L5_BP_bAC217_1'.*4-12 spikes.*after 1 simulations.*0.000 nA -> 0"):
        ic.simulate_spike_templates(models["L5_BP_bAC217_1"], config)


@pytest.mark.parametrize("fixture, n_seg", [("bp_templates", 245), ("ttpc1_templates", 1325)])
def test_templates_have_expected_shapes_and_alignment(request, fixture, n_seg):
    tp: ic.SpikeTemplates = request.getfixturevalue(fixture)
    assert tp.imem.shape == (SHORT.n_keep, n_seg, 224) and tp.vsoma.shape == (SHORT.n_keep, 224)
    assert tp.n_pre == 64 and tp.dt == 2**-5
    # the somatic peak sits at n_pre in every window and is a real action potential
    assert np.all(np.argmax(tp.vsoma, axis=1) == tp.n_pre)
    assert np.all(tp.vsoma[:, tp.n_pre] > 0)
    # spike count in the accepted range; the first spike was skipped
    assert SHORT.n_keep + 1 <= tp.spike_count <= SHORT.max_spikes
    assert np.all(np.diff(tp.peak_times) > 0) and tp.peak_times[0] > SHORT.delay
    # charge conservation: the membrane currents of all segments add up to the injected step current
    total = tp.imem.sum(axis=1)
    np.testing.assert_allclose(total, tp.amplitude, atol=1e-6 * np.abs(tp.imem).max())
    assert np.abs(tp.imem[:, 0, :]).max() > 0.1  # soma carries nA-scale currents at the spike
    assert tp.seg_start.shape == (n_seg, 3) and np.all(tp.seg_diam > 0)
    assert tp.provenance["neuron"].startswith("9.") and tp.provenance["simulations"] == len(tp.provenance["search"])


def test_membrane_currents_are_lfpys_rec_imem_bit_for_bit(models, bp_templates):
    """The currents recorded during the search equal a separate LFPy ``rec_imem`` simulation at the found current."""
    from neuron import h

    from eap_assets.core.cells import load_lfpy_cell

    cell = load_lfpy_cell(models[INTERNEURON], tstop=SHORT.tstop, dt=SHORT.dt, v_init=SHORT.v_init)
    stim = h.IClamp(cell.template.soma[0](0.5))
    stim.delay, stim.dur, stim.amp = SHORT.delay, SHORT.tstop, bp_templates.amplitude
    cell.simulate(rec_imem=True)
    peaks = np.rint(bp_templates.peak_times / SHORT.dt).astype(int)
    idx = peaks[:, None] + np.arange(-SHORT.n_pre, SHORT.n_post)[None, :]
    np.testing.assert_array_equal(np.transpose(cell.imem[:, idx], (1, 0, 2)), bp_templates.imem)
    np.testing.assert_array_equal(np.asarray(cell.somav)[idx], bp_templates.vsoma)


def test_templates_round_trip_through_npz(bp_templates, tmp_path):
    path = bp_templates.save(tmp_path / "bp.npz")
    back = ic.SpikeTemplates.load(path)
    for name in ("imem", "vsoma", "seg_start", "seg_end", "seg_diam", "soma_pos", "peak_times"):
        np.testing.assert_array_equal(getattr(back, name), getattr(bp_templates, name))
    assert back.amplitude == bp_templates.amplitude and back.provenance["search"] == bp_templates.provenance["search"]
    assert [p.name for p in tmp_path.iterdir()] == ["bp.npz"]  # no temp files left
