"""The rendered image equals peri 0.1.3's (fixtures made by
benchmarks/imaging/make_peri_fixtures.py in peri's own venv), and its autodiff gradients
agree with finite differences of the render."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinfer.imaging import model as M

FIXTURES = Path(__file__).parent / "fixtures"


def load_case(name, dtype=jnp.float64):
    f = np.load(FIXTURES / f"peri_{name}.npz")
    settings = json.loads(str(f["settings"]))
    values = dict(zip([str(p) for p in f["params"]], f["values"]))
    n = sum(1 for k in values if k.startswith("sph-") and k.endswith("-a"))
    bkg_order = settings["bkg_order"]
    mdl = M.ImageModel(
        shape=tuple(settings["shape"]), pad=(settings["pad"],) * 3,
        half=M.default_half(max(values[f"sph-{i}-a"] for i in range(n)), values["zscale"]),
        ilm_order=tuple(settings["ilm_order"]),
        bkg_kind="scalar" if bkg_order is None else "legendre-2p1d",
        bkg_order=tuple(bkg_order or (1, 1, 1)))
    names = mdl.param_names(n)
    # every peri parameter is one of ours, and no more
    ours = [q for row in names["pos"] for q in row] + names["rad"] + ["zscale"] + names["ilm"] \
        + names["bkg"] + ["offset"] + names["psf"]
    assert sorted(ours) == sorted(values)
    params = M.as_params([[values[q] for q in row] for row in names["pos"]],
                         [values[q] for q in names["rad"]], values["zscale"],
                         [values[q] for q in names["ilm"]], [values[q] for q in names["bkg"]],
                         values["offset"], [values[q] for q in names["psf"]], dtype=dtype)
    return mdl, params, f["model"], f["platonic"]


@pytest.mark.parametrize("name", ["volume", "bkgfield", "slice"])
def test_render_equals_peri(name):
    mdl, params, ref, ref_platonic = load_case(name)
    # one compiled program for both (the platonic field alone, op by op, costs a compile per op)
    image, platonic = jax.jit(lambda p: (M.render(mdl, p), M.platonic_field(mdl, p)[mdl.inner]))(params)
    image, platonic = np.asarray(image), np.asarray(platonic)
    assert image.shape == ref.shape
    assert np.max(np.abs(image - ref)) <= 1e-6 * np.ptp(ref)
    assert np.max(np.abs(platonic - ref_platonic)) <= 1e-9


def test_render_float32_close_to_peri():
    mdl, params, ref, _ = load_case("volume", dtype=jnp.float32)
    image = np.asarray(jax.jit(M.render, static_argnums=0)(mdl, params))
    assert image.dtype == np.float32
    assert np.max(np.abs(image - ref)) <= 2e-5 * np.ptp(ref)


def test_gradient_matches_finite_differences():
    # the spheres' exact-volume radius is differentiated as the root of sum t(a') = V; at
    # peri's volume_error (1e-5) the iteration stops within ~1e-4 of that root's derivative,
    # so the finite differences are taken with the iteration run to a tight tolerance
    mdl, params, ref, _ = load_case("slice")
    mdl = dataclasses.replace(mdl, volume_error=1e-11)
    weights = jnp.asarray(np.random.default_rng(0).normal(size=ref.shape))

    def scalar(p):
        return jnp.sum(weights * M.render(mdl, p))

    # one compiled program: the value for the finite differences, the gradient by reverse mode
    value_and_grad = jax.jit(jax.value_and_grad(scalar))
    grad = value_and_grad(params)[1]

    def f(p):
        return value_and_grad(p)[0]

    h = 1e-5
    checks = [("pos", (0, 1)), ("pos", (1, 2)), ("rad", (0,)), ("zscale", ()), ("ilm", (1,)),
              ("bkg", (0,)), ("offset", ()), ("psf", (1,)), ("psf", (2,))]
    for key, idx in checks:
        up = dict(params)
        dn = dict(params)
        up[key] = params[key].at[idx].add(h)
        dn[key] = params[key].at[idx].add(-h)
        fd = (float(f(up)) - float(f(dn))) / (2 * h)
        ad = float(grad[key][idx])
        assert abs(ad - fd) <= 1e-5 * max(1.0, abs(fd)), (key, idx, ad, fd)
