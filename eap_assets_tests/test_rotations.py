"""Rotation modes: what each keeps fixed, and that all draws come from the seed."""

from __future__ import annotations

import numpy as np
import pytest

from eap_assets.core import rotations

APICAL_BBP = np.array([0.0, 1.0, 0.0])


def test_alignment_puts_the_bbp_apical_axis_on_z():
    np.testing.assert_allclose(rotations.ALIGN_BBP @ APICAL_BBP, [0, 0, 1], atol=1e-15)


@pytest.mark.parametrize("mode", rotations.ROTATION_MODES)
def test_rotations_are_proper_and_seeded(mode):
    a = rotations.full_rotations(mode, 500, np.random.default_rng(1), mtype="TTPC1")
    b = rotations.full_rotations(mode, 500, np.random.default_rng(1), mtype="TTPC1")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a @ np.transpose(a, (0, 2, 1)), np.broadcast_to(np.eye(3), a.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(a), 1.0, atol=1e-12)


def test_what_each_mode_keeps():
    rng = np.random.default_rng(2)
    apical = lambda mode, **kw: rotations.full_rotations(mode, 2000, rng, **kw) @ APICAL_BBP  # noqa: E731
    assert np.allclose(apical("norot"), [0, 0, 1])
    assert np.allclose(apical("zrot"), [0, 0, 1])                    # spins about the apical axis
    xrot = rotations.random_rotations("xrot", 2000, rng)
    assert np.allclose(xrot @ [1, 0, 0], [1, 0, 0])                  # x (probe normal) fixed
    assert np.ptp(np.arccos(np.clip((xrot @ [0, 0, 1])[:, 2], -1, 1))) > 3.0
    uniform = apical("3drot")
    assert np.abs(uniform.mean(axis=0)).max() < 0.06                 # isotropic directions
    tilt = np.degrees(np.arccos(np.clip(apical("physrot", mtype="TTPC1")[:, 2], -1, 1)))
    assert tilt.max() <= 15.0 + 1e-9 and tilt.max() > 10.0
    assert np.abs(apical("physrot", mtype="NBC").mean(axis=0)).max() < 0.06


def test_unknown_mode():
    with pytest.raises(ValueError, match="rotation mode 'yrot' unknown"):
        rotations.random_rotations("yrot", 1, np.random.default_rng(0))
