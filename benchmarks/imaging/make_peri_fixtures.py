"""Render reference images with peri 0.1.3 (run in peri's own venv, not jaxinfer's).

    python3 -m venv /tmp/peri-venv
    /tmp/peri-venv/bin/pip install "numpy<2" "scipy<1.12" pyfftw peri==0.1.3
    /tmp/peri-venv/bin/python benchmarks/imaging/make_peri_fixtures.py tests/imaging/fixtures

Each case builds a peri ``ImageState`` over a blank image for given parameters and stores the
parameters (names and values, peri's order), the settings and ``state.model`` (the inner,
unpadded model image) in ``<out>/peri_<case>.npz``. tests/imaging/test_model_vs_peri.py
renders the same parameters with jaxinfer.imaging and compares.
"""

import json
import sys

import numpy as np
from peri import models, states, util
from peri.comp import comp, ilms, objs, psfs

CASES = {
    # a small 3-D volume: Legendre 2+1D illumination, constant background, anisotropic PSF,
    # zscale != 1, one particle partly outside the image
    "volume": dict(
        shape=(14, 22, 26), pad=8, zscale=0.9,
        pos=[[6.3, 10.2, 12.7], [4.1, 4.6, 19.4], [9.8, 17.3, 6.2], [12.5, 21.4, 24.9]],
        rad=[4.3, 3.1, 3.6, 2.7],
        ilm_order=(3, 2, 3), ilm={"ilm-xy-0-0": 0.9, "ilm-xy-1-0": 0.05, "ilm-xy-2-1": -0.03,
                                   "ilm-xy-0-1": 0.02, "ilm-z-0": 0.04, "ilm-z-2": -0.02},
        bkg=0.07, offset=0.12, sigmas=(2.4, 1.1, 1.5),
    ),
    # a Legendre background field instead of a scalar, default pad
    "bkgfield": dict(
        shape=(10, 20, 18), pad=24, zscale=1.1,
        pos=[[5.2, 9.6, 8.8], [3.0, 3.3, 14.1]], rad=[3.4, 2.2],
        ilm_order=(2, 1, 1), ilm={"ilm-xy-0-0": 1.0, "ilm-z-0": 0.1, "ilm-z-1": 0.05},
        bkg_order=(2, 2, 2), bkgfield={"bkg-xy-0-0": 0.05, "bkg-xy-1-1": 0.01, "bkg-z-1": 0.2},
        offset=0.0, sigmas=(2.0, 0.9, 1.0),
    ),
    # a 2-D image is a one-slice volume
    "slice": dict(
        shape=(1, 24, 28), pad=6, zscale=1.0,
        pos=[[0.0, 11.6, 12.2], [0.3, 5.1, 22.0]], rad=[4.2, 3.3],
        ilm_order=(1, 3, 3), ilm={"ilm-xy-0-0": 0.8, "ilm-xy-2-2": 0.04, "ilm-xy-1-2": -0.05},
        bkg=0.02, offset=0.05, sigmas=(1.8, 1.2, 1.4),
    ),
}


def build(case):
    pos = np.array(case["pos"], float)
    rad = np.array(case["rad"], float)
    sph = objs.PlatonicSpheresCollection(pos, rad, zscale=case["zscale"])
    ilm = ilms.LegendrePoly2P1D(order=case["ilm_order"], constval=1.0)
    if "bkgfield" in case:
        bkg = ilms.LegendrePoly2P1D(order=case["bkg_order"], category="bkg", constval=0.01)
    else:
        bkg = comp.GlobalScalar("bkg", case["bkg"])
    off = comp.GlobalScalar("offset", case["offset"])
    psf = psfs.AnisotropicGaussianXYZ(sigmas=case["sigmas"])
    st = states.ImageState(util.Image(np.zeros(case["shape"])), [sph, ilm, bkg, off, psf],
                           mdl=models.ConfocalImageModel(), pad=case["pad"], sigma=0.05)
    updates = dict(case["ilm"])
    updates.update(case.get("bkgfield", {}))
    st.update(list(updates), list(updates.values()))
    return st


def main(out):
    for name, case in CASES.items():
        st = build(case)
        params = list(st.params)
        np.savez_compressed(
            f"{out}/peri_{name}.npz", model=np.asarray(st.model, float),
            params=np.array(params), values=np.array(st.get_values(params), float),
            settings=json.dumps({k: case[k] for k in ("shape", "pad")} | {
                "ilm_order": case["ilm_order"], "bkg_order": case.get("bkg_order"),
                "method": st.get("obj").method}),
            platonic=np.asarray(st.get("obj").get()[st.inner], float))
        print(name, st.model.shape, float(st.model.min()), float(st.model.max()), st.get("obj").method)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/imaging/fixtures")
