"""add_subtract on a synthetic image: a spurious particle is removed and three deleted
particles are found again; feature_guess finds particles where they are."""

import jax
import numpy as np

from jaxinfer.imaging import simulate, states, util
from jaxinfer.imaging.comp import comp, ilms, objs, psfs
from jaxinfer.imaging.opt import addsubtract

SHAPE, PAD, SIGMA = (12, 32, 32), 5, 0.05


def test_add_subtract_removes_spurious_and_readds_deleted():
    image, truth, _ = simulate.synthetic_image(jax.random.PRNGKey(5), shape=SHAPE, n_particles=4,
                                               radius=4.5, radius_spread=0.2, pad=PAD,
                                               ilm_order=(1, 1, 1), psf_values=(2.0, 1.2, 1.2),
                                               noise=SIGMA)
    pos, rad = np.asarray(truth["pos"]), np.asarray(truth["rad"])
    # keep one true particle, delete three, add a spurious small one where there is nothing
    occupied = np.min(np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1) + 1e9 * np.eye(4))
    assert occupied > 9
    grid = np.stack(np.meshgrid(*[np.arange(2, s - 2) for s in SHAPE], indexing="ij"), -1).reshape(-1, 3)
    far = grid[np.argmax(np.min(np.linalg.norm(grid[:, None] - pos[None], axis=-1), axis=1))]
    st = states.ImageState(util.Image(image), [
        objs.PlatonicSpheresCollection(np.vstack([pos[:1], far]), np.array([rad[0], 2.0])),
        ilms.LegendrePoly2P1D(order=(1, 1, 1), constval=float(truth["ilm"][0])),
        comp.GlobalScalar("bkg", 0.0), comp.GlobalScalar("offset", 0.0),
        psfs.AnisotropicGaussianXYZ(sigmas=tuple(np.asarray(truth["psf"])))],
        pad=PAD, sigma=SIGMA)

    guess, n = addsubtract.feature_guess(st, 4.5, invert=True)
    assert n >= 3
    # the three strongest features sit on the three missing particles
    d = np.linalg.norm(guess[:3, None, :] - pos[None, 1:, :], axis=-1)
    assert np.all(d.min(axis=1) < 1.5)

    total, removed, added = addsubtract.add_subtract(st, max_npart=10)
    assert removed.shape == (1, 3) and np.linalg.norm(removed[0] - far) < 1e-6
    assert st.N == 4 and added.shape == (3, 3)
    found = st.obj_get_positions()
    dist = np.linalg.norm(found[:, None, :] - pos[None, :, :], axis=-1)
    assert np.all(dist.min(axis=0) < 0.3)          # every true particle has a match
    assert total == 4
