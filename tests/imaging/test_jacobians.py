"""The fits' hand-structured Jacobians equal plain forward-mode autodiff of the residuals:
the per-particle cube Jacobian of the platonic field and the globals Jacobian with the
spheres held (plus its zscale column)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.imaging import fit as F
from jaxinfer.imaging import names as N
from jaxinfer.imaging import platonic, simulate, states, util
from jaxinfer.imaging.comp import comp, ilms, objs, psfs
from jaxinfer.imaging.model import render

SHAPE, PAD = (8, 16, 16), 8


def _state():
    image, truth, _ = simulate.synthetic_image(jax.random.PRNGKey(3), shape=SHAPE, n_particles=2,
                                               radius=2.5, pad=PAD, ilm_order=(1, 1, 1),
                                               psf_values=(1.6, 1.0, 1.0), noise=0.05)
    st = states.ImageState(util.Image(image), [
        objs.PlatonicSpheresCollection(np.asarray(truth["pos"]), np.asarray(truth["rad"])),
        ilms.LegendrePoly2P1D(order=(1, 1, 1)), comp.GlobalScalar("bkg", 0.1),
        comp.GlobalScalar("offset", 0.0), psfs.AnisotropicGaussianXYZ(sigmas=(1.6, 1.0, 1.0))],
        pad=PAD, sigma=0.05)
    return st


def test_platonic_cube_jacobian_equals_jacfwd():
    m = _state().image_model
    centres = jnp.array([[6.3, 9.2, 10.7], [5.1, 14.6, 7.4]])
    radii = jnp.array([2.4, 2.9])
    active = jnp.array([1.0, 0.0])
    zscale = jnp.asarray(0.9)

    def field(c, a):
        return platonic.render_platonic(m.padded_shape, m.half, c, a, zscale, active)

    got = jax.jit(lambda c, a: platonic.platonic_jacobian(m.padded_shape, m.half, c, a, zscale,
                                                          active))(centres, radii)
    dc, da = jax.jit(jax.jacfwd(field, argnums=(0, 1)))(centres, radii)   # (*shape, N, 3), (*shape, N)
    want = jnp.concatenate([jnp.moveaxis(dc, (-2, -1), (0, 1)),
                            jnp.moveaxis(da, -1, 0)[:, None]], axis=1)
    assert got.shape == (2, 4) + m.padded_shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * float(jnp.abs(want).max()))
    assert float(jnp.abs(want[0]).max()) > 0.1


def test_globals_jacobian_equals_jacfwd():
    st = _state()
    m = st.image_model
    refs = F.global_refs(m)
    scale = jnp.linspace(0.5, 2.0, len(refs))
    args = (st.param_tree, st.data_array, F.platonic_field(m, st.param_tree))
    u = N.pack(st.param_tree, refs) / scale

    # the blurs on the image grown by a margin smaller than the pad (z: 6 of 8, y/x: 4)
    margin = F.blur_margin(m, st.param_tree["psf"])
    assert margin[0] < PAD and margin[1] < PAD
    assert np.all(F.psf_bound(m, margin) > np.asarray(st.param_tree["psf"]))

    @functools.partial(jax.jit, static_argnums=1)
    def both(free, margin):      # one compilation for both masks (free is traced)
        res, jac = F.globals_problem(m, scale, free, margin)
        return jac(u, args), jax.jacfwd(res)(u, args), res(u, args)

    for zscale_free in (0.0, 1.0):
        got, want, r = both(jnp.ones(len(refs)).at[0].set(zscale_free), margin)
        # the margin's residuals equal those of the model (a blur over the whole padded volume)
        r_full = np.ravel(st.data_array - render(m, st.param_tree))
        np.testing.assert_allclose(r, r_full, rtol=0, atol=1e-13 * float(np.abs(r_full).max()))
        if not zscale_free:
            want = want.at[:, 0].set(0.0)     # a held zscale column is never used
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * float(jnp.abs(want).max()))


def test_joint_normal_equations_equal_those_of_jacfwd():
    # the joint fit's J^T J and J^T r assembled from the tiles (globals block, each particle's
    # 4x4 block, globals x particle on the tile, the overlapping pairs) equal those of the
    # dense forward-mode J of the residuals, with a particle whose tile leaves the image
    st = _state()
    m, params = st.image_model, st.param_tree
    params = dict(params, pos=params["pos"].at[1].set(jnp.array([1.2, 14.9, 2.1])))
    refs = F.global_refs(m)
    inputs, *_, margin, key = F._joint_inputs(m, params, refs, 1.0, None, None)
    free, scale, corners, geometry, pairs = inputs
    assert np.any(np.asarray(pairs)[:, 1] > 0)            # the two tiles overlap
    split, res, normal = F.joint_problem(m, params, st.data_array, free.at[0].set(True),
                                            scale, corners, margin, geometry, pairs)
    x = jnp.concatenate([N.pack(params, refs) / scale, params["pos"].ravel(), params["rad"]])
    x = x + 0.02 * jnp.sin(jnp.arange(x.shape[0]))

    @jax.jit
    def both(x):
        r = res(x, None)
        jac = jax.jacfwd(res)(x, None)
        return normal(x, None, r), (jac.T @ jac, jac.T @ r)

    (jtj, jtr), (want_jtj, want_jtr) = both(x)
    np.testing.assert_allclose(jtj, want_jtj, rtol=0, atol=1e-10 * float(jnp.abs(want_jtj).max()))
    np.testing.assert_allclose(jtr, want_jtr, rtol=0, atol=1e-10 * float(jnp.abs(want_jtr).max()))
