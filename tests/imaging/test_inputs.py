"""Images in (arrays, .npy, TIFF) and bad input refused with clear errors, before any tracing."""

import jax
import numpy as np
import pytest

from jaxinfer.imaging import states, util
from jaxinfer.imaging.comp import comp, ilms, objs, psfs


def components(pos=((4.0, 8.0, 8.0),), rad=(3.0,)):
    return [objs.PlatonicSpheresCollection(np.asarray(pos, float), np.asarray(rad, float)),
            ilms.LegendrePoly2P1D(order=(1, 1, 1), constval=1.0), comp.GlobalScalar("bkg", 0.0),
            comp.GlobalScalar("offset", 0.0), psfs.AnisotropicGaussianXYZ(sigmas=(2.0, 1.0, 1.0))]


def test_four_d_array_refused():
    with pytest.raises(ValueError, match="2-D .* or 3-D .*4-D"):
        util.Image(np.zeros((2, 3, 4, 5)))


def test_nan_pixels_refused():
    im = np.zeros((4, 6, 6))
    im[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 non-finite pixel.*\(1, 2, 3\)"):
        states.ImageState(im, components(), pad=2)


def test_nonpositive_radius_refused():
    with pytest.raises(ValueError, match="radii must be > 0"):
        objs.PlatonicSpheresCollection(np.array([[4.0, 8, 8], [2, 2, 2]]), np.array([3.0, 0.0]))


def test_particle_far_outside_refused():
    with pytest.raises(ValueError, match="outside the padded image"):
        states.ImageState(np.zeros((8, 16, 16)), components(pos=((4.0, 8.0, 60.0),)), pad=4)


def test_unknown_parameter_name_refused():
    st = states.ImageState(np.zeros((8, 16, 16)), components(), pad=4)
    with pytest.raises(KeyError, match="unknown parameter name 'psf-sigma'"):
        st.get_values("psf-sigma")
    with pytest.raises(KeyError, match="particle 5 does not exist"):
        st.update("sph-5-x", 1.0)
    # names that exist resolve to the values given to the components
    assert st.get_values(["sph-0-x", "sph-0-a", "psf-sigz", "ilm-xy-0-0"]) == [8.0, 3.0, 2.0, 1.0]
    assert st.params[:5] == ["sph-0-z", "sph-0-y", "sph-0-x", "sph-0-a", "zscale"]


def test_two_d_image_is_one_slice():
    st = states.ImageState(np.zeros((16, 16)), components(pos=((0.0, 8.0, 8.0),)), pad=3)
    assert st.data.shape == (1, 16, 16)
    # the render's shape, traced but not compiled (test_model_vs_peri renders a 2-D case)
    from jaxinfer.imaging.model import render
    assert jax.eval_shape(lambda p: render(st.image_model, p), st.param_tree).shape == (1, 16, 16)


def test_npy_and_tiff_load_like_peri(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    raw = (np.arange(4 * 5 * 6) % 200).reshape(4, 5, 6).astype(np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", raw, photometric="minisblack")
    np.save(tmp_path / "stack.npy", raw)
    for name in ("stack.tif", "stack.npy"):
        im = util.RawImage(str(tmp_path / name))
        # peri's default exposure (0, 255)
        np.testing.assert_allclose(im.get_image(), raw / 255.0)
        inv = util.RawImage(str(tmp_path / name), invert=True, exposure=(0, 199))
        scaled = raw / 199.0
        np.testing.assert_allclose(inv.get_image(), scaled.max() + scaled.min() - scaled)
    with pytest.raises(ValueError, match="unsupported image file"):
        util.RawImage(str(tmp_path / "stack.png"))
