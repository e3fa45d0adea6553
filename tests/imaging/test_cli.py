"""``jaxinfer imaging fit`` argument handling and its clear errors (no fit is run here; the
fit path is the one tests/imaging/test_fit.py covers)."""

import argparse

import numpy as np
import pytest

from jaxinfer.imaging import cli


def parser():
    p = argparse.ArgumentParser(prog="jaxinfer")
    cli.register(p.add_subparsers(dest="command", required=True))
    return p


def test_fit_arguments_parse():
    args = parser().parse_args(["imaging", "fit", "x.tif", "--radius", "5", "--out", "p.csv",
                                "--no-invert", "--psf", "2,1,1"])
    assert args.radius == 5.0 and args.out == "p.csv" and args.invert is False
    assert cli._floats(args.psf, 3) == [2.0, 1.0, 1.0]
    with pytest.raises(SystemExit):
        parser().parse_args(["imaging", "fit", "x.tif"])          # --radius is required


@pytest.mark.parametrize("content, message", [
    (np.zeros((2, 3, 4, 5)), "4-D"),
    (np.full((4, 8, 8), np.nan), "non-finite"),
    (np.ones((4, 8, 8)), "constant"),
])
def test_fit_refuses_bad_images(tmp_path, capsys, content, message):
    path = tmp_path / "im.npy"
    np.save(path, content)
    args = parser().parse_args(["imaging", "fit", str(path), "--radius", "3"])
    assert args.handler(args) == 2
    assert message in capsys.readouterr().err


def test_initial_state_finds_particles():
    from jaxinfer.imaging import simulate
    import jax

    image, truth, _ = simulate.synthetic_image(jax.random.PRNGKey(2), shape=(10, 24, 24),
                                               n_particles=2, radius=4.0, pad=4,
                                               ilm_order=(1, 1, 1), psf_values=(2.0, 1.2, 1.2))
    st = cli.initial_state(image, 4.0, pad=4)
    pos = st.obj_get_positions()
    d = np.linalg.norm(pos[:, None, :] - np.asarray(truth["pos"])[None], axis=-1)
    assert st.N >= 2 and np.all(d.min(axis=0) < 2.0)   # integer-pixel maxima of a blurred image
