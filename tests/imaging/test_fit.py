"""Fitting on a small synthetic image with known truth: burn + finish recover the particles
near the Cramér–Rao bound; the CRB matches a closed form and the Fisher matrix matches finite
differences of the render; the LM facades report honest statistics."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxinfer.imaging.crb import fisher_information
from jaxinfer.imaging import fit as F
from jaxinfer.imaging import names as N
from jaxinfer.imaging.model import render
from jaxinfer.imaging import simulate, states, util
from jaxinfer.imaging.comp import comp, ilms, objs, psfs
from jaxinfer.imaging.opt import optimize as opt

SHAPE, PAD, ORDER, SIGMA = (12, 24, 24), 5, (1, 2, 2), 0.05


def make_state(image, p):
    st = states.ImageState(util.Image(image), [
        objs.PlatonicSpheresCollection(np.asarray(p["pos"], float), np.asarray(p["rad"], float)),
        ilms.LegendrePoly2P1D(order=ORDER), comp.GlobalScalar("bkg", 0.0),
        comp.GlobalScalar("offset", 0.0),
        psfs.AnisotropicGaussianXYZ(sigmas=tuple(np.asarray(p["psf"], float)))],
        pad=PAD, sigma=SIGMA)
    st.update(st.get("ilm").params, np.asarray(p["ilm"], float))
    return st


@pytest.fixture(scope="module")
def case():
    image, truth, _ = simulate.synthetic_image(jax.random.PRNGKey(0), shape=SHAPE, n_particles=3,
                                               radius=3.5, pad=PAD, ilm_order=ORDER,
                                               psf_values=(2.0, 1.2, 1.2), noise=SIGMA)
    start = simulate.perturbed_start(jax.random.PRNGKey(1), truth, image)
    truth = {k: np.asarray(v) for k, v in truth.items()}
    # the truth on a state built from the start: the same drawing cubes (the same compiled
    # render) as the fitted state
    st_true = make_state(image, start)
    st_true.set_param_tree(truth)
    return image, truth, start, st_true


@pytest.fixture(scope="module")
def fitted(case):
    image, truth, start, _ = case
    st = make_state(image, start)
    start_error = st.error
    kinds = ("globals", "particles", "joint")
    programs = [F._jitted(k)._cache_size() for k in kinds]
    # the joint LM (not the default; the alternation's accuracy is checked by the notebook's
    # test and test_addsubtract)
    b = opt.burn(st, n_loop=4, desc=None, collect_stats=True, joint=True)
    f = opt.finish(st, n_loop=2, desc=None, joint=True)
    programs = [F._jitted(k)._cache_size() - p for k, p in zip(kinds, programs)]
    return st, b, f, start_error, programs


def test_burn_finish_recover_particles_near_the_bound(case, fitted):
    image, truth, start, st_true = case
    st, b, f, start_error, _ = fitted
    assert st.error < 0.5 * start_error
    # the fit explains the data as well as the truth does (it may overfit the noise slightly):
    # issue 8's criterion, within 0.1% of the error at the true parameters
    assert st.error <= 1.001 * st_true.error, (st.error, st_true.error)
    bound = st_true.crb(st_true.param_positions())
    rmse = np.sqrt(np.mean((st.obj_get_positions() - truth["pos"]) ** 2))
    assert rmse <= 2.0 * np.sqrt(np.mean(bound ** 2))
    np.testing.assert_allclose(st.get_values(["psf-sigz", "psf-sigy", "psf-sigx"]),
                               truth["psf"], rtol=0.03)


def test_burn_and_finish_share_compiled_programs(fitted):
    # numeric LM settings are traced and the margin and particle layout are kept: every joint
    # step of burn and finish is one program, and no separate globals or sweep program is made
    *_, programs = fitted
    assert programs == [0, 0, 1]


def test_convergence_dicts_are_honest(fitted):
    st, b, f, *_ = fitted
    assert set(b) >= {"converged", "all_loop_values", "global_stats", "particle_stats"}
    assert isinstance(b["converged"], bool) and isinstance(f["converged"], bool)
    # the joint burn is one LM run whose own tests are the loop test: its dict reports that
    # run's status (converged only if a test passed, within 4 loops of 2 iterations)
    assert len(b["all_loop_values"]) == 1 and len(b["global_stats"]) == 1
    assert f["loop_values"].shape == (2, len(st.params))
    for stats in b["global_stats"]:
        assert stats["converged"] == (stats["status"] < 20)
        assert b["converged"] == stats["converged"]
        assert stats["num_iter"] <= 8
        assert stats["error"] > 0


def test_crb_closed_form_for_the_background(case):
    *_, st_true = case
    # dM/dbkg = 1 at every pixel: Fisher = n_pixels / sigma^2
    bound = st_true.crb(["bkg"])
    assert bound.shape == (1,)
    assert abs(bound[0] - SIGMA / np.sqrt(np.prod(SHAPE))) <= 1e-10


def test_fisher_matches_finite_differences(case):
    *_, st_true = case
    names = ["sph-0-x", "sph-1-a", "psf-sigz", "ilm-xy-0-0", "offset"]
    # the exact-volume radius is differentiated as the root of sum t(a') = V: the finite
    # differences are taken with that iteration run to a tight tolerance (at peri's 1e-5 it
    # stops within ~1e-4 of the root's derivative)
    mdl = dataclasses.replace(st_true.image_model, volume_error=1e-11)
    refs = st_true._refs(names)
    params = st_true.param_tree
    fisher = np.asarray(fisher_information(mdl, params, refs))
    x0 = N.pack(params, refs)
    cols = []
    for i in range(len(names)):
        h = 1e-5
        up = np.asarray(render(mdl, N.unpack(params, refs, x0.at[i].add(h))))
        dn = np.asarray(render(mdl, N.unpack(params, refs, x0.at[i].add(-h))))
        cols.append(((up - dn) / (2 * h)).ravel())
    jac = np.stack(cols)
    np.testing.assert_allclose(fisher, jac @ jac.T, rtol=1e-6, atol=1e-6 * np.abs(fisher).max())
