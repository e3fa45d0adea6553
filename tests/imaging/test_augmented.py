"""LMAugmentedState (peri's R(z) augmented state) recovers radii that follow a known Legendre
polynomial in z on a synthetic image, and its facade (do_run_2, do_internal_run, J, JTJ,
damping, get_termination_stats, reset) reports consistent numbers."""

import jax
import numpy as np

from jaxinfer.imaging import fit as F
from jaxinfer.imaging import model as M
from jaxinfer.imaging import states, util
from jaxinfer.imaging.comp import comp, ilms, objs, psfs
from jaxinfer.imaging.opt import optimize as opt

SHAPE, PAD, SIGMA = (12, 16, 16), 3, 0.01
POS = np.array([[2.5, 5.0, 5.2], [6.0, 10.8, 10.5], [9.5, 5.3, 11.0]])
RAD0 = np.array([2.5, 2.5, 2.5])
RZ_TRUE = np.array([0.04, 0.12])


def test_legendre_series_equals_numpy():
    x = np.linspace(-1, 1, 7)
    c = np.array([0.3, -0.2, 0.5, 0.1])
    np.testing.assert_allclose(F.legendre_series(x, c), np.polynomial.legendre.legval(x, c),
                               atol=1e-14)


def _case():
    """A state started from RAD0 on an image whose radii follow RZ_TRUE; and those radii."""
    zs = (POS[:, 0] - SHAPE[0] / 2) / (SHAPE[0] / 2)
    rad_true = RAD0 * np.exp(np.polynomial.legendre.legval(zs, RZ_TRUE))
    comps = lambda rad: [objs.PlatonicSpheresCollection(POS, rad),   # noqa: E731
                         ilms.LegendrePoly2P1D(order=(1, 1, 1), constval=1.0),
                         comp.GlobalScalar("bkg", 0.0), comp.GlobalScalar("offset", 0.0),
                         psfs.AnisotropicGaussianXYZ(sigmas=(1.6, 1.0, 1.0))]
    truth = states.ImageState(util.NullImage(shape=SHAPE), comps(rad_true), pad=PAD, sigma=SIGMA)
    image = np.asarray(truth.model) + SIGMA * np.asarray(
        jax.random.normal(jax.random.PRNGKey(2), SHAPE))
    st = states.ImageState(util.Image(image), comps(RAD0), pad=PAD, sigma=SIGMA)
    return st, rad_true


def test_augmented_state_recovers_radii_in_z():
    st, rad_true = _case()
    st.update("bkg", 0.02)
    aug = opt.AugmentedState(st, ["bkg"], rz_order=2)
    lm = opt.LMAugmentedState(aug, max_iter=6, damping=1.0)
    start_error = st.error
    lm.do_run_2()
    stats = lm.get_termination_stats()
    assert stats["error"] == st.error < 0.2 * start_error
    np.testing.assert_allclose(aug.rz, RZ_TRUE, atol=0.01)
    np.testing.assert_allclose(st.obj_get_radii(), rad_true, atol=0.03)
    assert abs(st.get_values("bkg")) < 2e-3
    J = lm.J
    assert J.shape == (1 + 2, np.prod(SHAPE))
    np.testing.assert_allclose(lm.JTJ, J @ J.T)
    assert lm.damping.shape == (1,) and lm.damping[0] > 0
    assert stats["converged"] == (stats["status"] < 20)
    # one more internal run from the fitted point changes almost nothing
    before = st.error
    lm.do_internal_run()
    assert st.error <= before * (1 + 1e-9)
    lm.reset()
    np.testing.assert_allclose(aug.rad0, st.obj_get_radii())
    assert np.all(aug.rz == 0)


def test_burn_with_rz_order_fits_radii_in_z():
    # burn(rz_order=2): its globals step is the augmented one (the same compiled fit as above);
    # the particle sweeps hold the radii (include_rad=False), so only R(z) can move them
    st, rad_true = _case()
    start_error = st.error
    out = opt.burn(st, mode="polish", n_loop=2, rz_order=2, include_rad=False, desc=None,
                   collect_stats=True)
    assert st.error < 0.2 * start_error
    assert np.sqrt(np.mean((st.obj_get_radii() - rad_true) ** 2)) < 0.03
    assert all(s["converged"] == (s["status"] < 20) for s in out["global_stats"])
