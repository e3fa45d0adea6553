"""Run peri 0.1.3's burn + finish on a prepared case (peri's own venv; 1 thread).

    OMP_NUM_THREADS=1 /tmp/peri-venv/bin/python benchmarks/imaging/peri_runner.py CASE.npz OUT.npz

CASE.npz (written by bench_peri.py) holds the image, the starting parameters and settings;
OUT.npz gets the final positions / radii / values, the errors and the wall times.
"""

import json
import sys
import time

import numpy as np
import peri.states as peri_states
from peri import models, states, util
from peri.comp import comp, ilms, objs, psfs
from peri.opt import optimize as opt

_sample = peri_states.sample


def _sample_with_tuple(field, inds=None, slicer=None, flat=True):
    # peri indexes with a list of slices, which numpy >= 1.23 refuses
    if isinstance(slicer, list):
        slicer = tuple(slicer)
    return _sample(field, inds=inds, slicer=slicer, flat=flat)


peri_states.sample = _sample_with_tuple


def main(case_path, out_path):
    case = np.load(case_path)
    settings = json.loads(str(case["settings"]))
    order = tuple(settings["ilm_order"])
    sph = objs.PlatonicSpheresCollection(case["pos"].copy(), case["rad"].copy(),
                                         zscale=float(case["zscale"]))
    ilm = ilms.LegendrePoly2P1D(order=order, constval=1.0)
    st = states.ImageState(util.Image(case["image"].copy()),
                           [sph, ilm, comp.GlobalScalar("bkg", float(case["bkg"][0])),
                            comp.GlobalScalar("offset", float(case["offset"])),
                            psfs.AnisotropicGaussianXYZ(sigmas=tuple(case["psf"]))],
                           mdl=models.ConfocalImageModel(), pad=int(settings["pad"]),
                           sigma=float(settings["sigma"]))
    st.update(st.get("ilm").params, list(case["ilm"]))
    start_err = st.error
    t0, c0 = time.perf_counter(), time.process_time()
    b = opt.burn(st, n_loop=int(settings["n_burn"]), desc=None)
    t1, c1 = time.perf_counter(), time.process_time()
    f = opt.finish(st, n_loop=int(settings["n_finish"]), desc=None)
    t2, c2 = time.perf_counter(), time.process_time()
    np.savez(out_path, pos=st.obj_get_positions(), rad=st.obj_get_radii(),
             start_error=start_err, error=st.error, burn_s=t1 - t0, finish_s=t2 - t1,
             burn_cpu_s=c1 - c0, finish_cpu_s=c2 - c1,
             burn_converged=bool(b["converged"]), finish_converged=bool(f["converged"]),
             psf=np.array(st.get_values(st.get("psf").params)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
