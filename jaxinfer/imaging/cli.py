"""``jaxinfer imaging fit IMAGE`` (feature guess, burn, add-subtract, finish -> CSV) and the
imaging part of ``jaxinfer demo``."""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional

import numpy as np

__all__ = ["register", "demo", "initial_state", "fit_image", "demo_fit"]


def _floats(text, n=None):
    vals = [float(v) for v in text.split(",")]
    if n is not None and len(vals) != n:
        raise ValueError(f"expected {n} comma-separated numbers, got {text!r}")
    return vals


def initial_state(image, radius, *, pad=24, sigma=0.05, invert=True, psf=(2.0, 1.0, 1.0),
                  ilm_order=(3, 3, 3), zscale=1.0, minmass=None):
    """A starting ImageState for ``image``: particles from local-maximum featuring of the
    (inverted) image at ``radius``, flat illumination at the 90th percentile, bkg = offset = 0."""
    from jaxinfer.imaging import states, util
    from jaxinfer.imaging.comp import comp, ilms, objs, psfs
    from jaxinfer.imaging.opt.addsubtract import local_max_featuring

    data = util.as_volume(image)
    im = (data.max() + data.min() - data) if invert else data
    if minmass is None:
        minmass = radius ** 3 * 4 / 3.0 * np.pi * 0.01
    pos, mass = local_max_featuring(im, radius=radius, minmass=minmass)
    pos = pos[np.argsort(mass)[::-1]].astype(float)
    if pos.shape[0] == 0:
        raise ValueError(f"no particles of radius {radius} found in the image; check --radius "
                         "and --invert/--no-invert")
    sph = objs.PlatonicSpheresCollection(pos, radius, zscale=zscale)
    ilm = ilms.LegendrePoly2P1D(order=ilm_order, constval=float(np.percentile(data, 90)))
    return states.ImageState(util.Image(data), [sph, ilm, comp.GlobalScalar("bkg", 0.0),
                                                comp.GlobalScalar("offset", 0.0),
                                                psfs.AnisotropicGaussianXYZ(sigmas=psf)],
                             pad=pad, sigma=sigma)


def fit_image(state, *, n_burn=6, n_finish=4, add_subtract=True, progress=None):
    """burn, add-subtract, polish burn, finish. Returns a dict of convergence reports."""
    from jaxinfer.imaging.opt import addsubtract, optimize

    say = progress or (lambda message: None)
    report = {}

    def stage(name):
        return lambda info: say(f"{name} loop {info['loop']} {info['stage']}: error {info['error']:.6g}")

    report["burn"] = optimize.burn(state, n_loop=n_burn, desc=None, progress=stage("burn"))
    if add_subtract:
        changed, removed, added = addsubtract.add_subtract(state)
        say(f"add-subtract: {len(added)} added, {len(removed)} removed")
        report["add_subtract"] = {"changed": int(changed), "added": len(added), "removed": len(removed)}
        if changed:
            report["polish"] = optimize.burn(state, n_loop=n_burn, mode="polish", desc=None,
                                             progress=stage("polish"))
    report["finish"] = optimize.finish(state, n_loop=n_finish, desc=None, progress=stage("finish"))
    return report


def _table(state, with_crb):
    import pandas as pd

    pos, rad = state.obj_get_positions(), state.obj_get_radii()
    df = pd.DataFrame({"z": pos[:, 0], "y": pos[:, 1], "x": pos[:, 2], "a": rad})
    if with_crb:
        names = [f"sph-{i}-{c}" for i in range(state.N) for c in "zyxa"]
        bound = state.crb(names).reshape(-1, 4)
        for j, c in enumerate("zyxa"):
            df[f"crb_{c}"] = bound[:, j]
    return df


def _plot(state, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = int(np.argmax(np.sum(np.abs(state.obj_get_positions()[:, None, 0]
                                    - np.arange(state.data.shape[0])[None, :]) < 1, axis=0)))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, img, title in zip(axes, (state.data[z], state.model[z], state.residuals[z]),
                              ("data", "model", "residuals")):
        ax.imshow(img, cmap="gray")
        ax.set_title(f"{title} (z = {z})")
        ax.set_axis_off()
    near = np.abs(state.obj_get_positions()[:, 0] - z) < state.obj_get_radii()
    p = state.obj_get_positions()[near]
    axes[0].plot(p[:, 2], p[:, 1], "r+", ms=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fit_command(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)   # the fits are validated in float64 only
    from jaxinfer.imaging import util

    def fail(message):
        print(f"jaxinfer imaging fit: error: {message}", file=sys.stderr, flush=True)
        return 2

    start = time.perf_counter()
    try:
        raw = util.as_volume(util.load_image_file(args.image), what=f"image {args.image!r}")
        lo, hi = float(raw.min()), float(raw.max())
        if hi == lo:
            return fail("the image is constant")
        image = (raw - lo) / (hi - lo)
        state = initial_state(image, args.radius, pad=args.pad, sigma=args.sigma,
                              invert=args.invert, psf=_floats(args.psf, 3), zscale=args.zscale)
    except (OSError, ValueError, TypeError) as err:
        return fail(str(err))

    def progress(message):
        print(f"[{time.perf_counter() - start:7.1f} s] {message}", file=sys.stderr, flush=True)

    progress(f"{state.N} particles featured in a {image.shape} image")
    report = fit_image(state, n_burn=args.n_burn, n_finish=args.n_finish,
                       add_subtract=not args.no_add_subtract, progress=progress)
    df = _table(state, args.crb)
    df.to_csv(args.out, index=False)
    if args.plot:
        _plot(state, args.plot)
    ok = report["finish"]["converged"]
    print(f"{state.N} particles -> {args.out}; error {state.error:.6g}; finish "
          f"{'met' if ok else 'did NOT meet'} its convergence test; "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    return 0


def register(subparsers) -> None:
    """Add ``jaxinfer imaging fit ...``."""
    imaging = subparsers.add_parser("imaging", help="locate spherical particles in confocal "
                                                    "images (peri)")
    commands = imaging.add_subparsers(dest="imaging_command", required=True)
    p = commands.add_parser("fit", help="fit the particle-image model to an image",
                            description="Feature guess, burn, add-subtract, finish; writes one "
                                        "row per particle (z, y, x, a in pixels).")
    p.add_argument("image", help=".tif/.tiff stack or .npy array (z, y, x) or (y, x)")
    p.add_argument("--radius", type=float, required=True, help="particle radius guess, pixels")
    p.add_argument("--out", default="particles.csv", help="output CSV (default particles.csv)")
    p.add_argument("--pad", type=int, default=24, help="padding in voxels (default 24)")
    p.add_argument("--sigma", type=float, default=0.05, help="pixel noise of the scaled image")
    p.add_argument("--psf", default="2.0,1.0,1.0", help="starting psf-sigz,sigy,sigx (2 sigma)")
    p.add_argument("--zscale", type=float, default=1.0, help="z pixel size over x-y pixel size")
    p.add_argument("--no-invert", dest="invert", action="store_false",
                   help="particles are bright on a dark background")
    p.add_argument("--n-burn", type=int, default=6, help="burn loops (default 6)")
    p.add_argument("--n-finish", type=int, default=4, help="finish loops (default 4)")
    p.add_argument("--no-add-subtract", action="store_true", help="skip add-subtract")
    p.add_argument("--crb", action="store_true", help="add Cramér-Rao bound columns")
    p.add_argument("--plot", metavar="PNG", help="figure of data / model / residuals")
    p.set_defaults(handler=_fit_command)


def demo_fit(progress: Optional[Callable[[str], None]] = None):
    """The demo's fit: a synthetic 12x24x24 image with 3 particles, started 0.5 px off and
    with a PSF 20% too wide, fitted by ``finish`` alone (three compiled fits: the globals, the
    psf, the particle groups; ``burn`` would add three more). Returns a dict of numbers."""
    import jax

    from jaxinfer.imaging import simulate, states, util
    from jaxinfer.imaging.comp import comp, ilms, objs, psfs
    from jaxinfer.imaging.opt import optimize

    say = progress or (lambda m: None)
    shape, pad, order = (12, 24, 24), 5, (1, 2, 2)
    image, truth, _ = simulate.synthetic_image(jax.random.PRNGKey(3), shape=shape,
                                               n_particles=3, radius=3.5, radius_spread=0.2,
                                               pad=pad, ilm_order=order, psf_values=(2.0, 1.2, 1.2))
    start = simulate.perturbed_start(jax.random.PRNGKey(4), truth, image)
    st = states.ImageState(util.Image(image), [
        objs.PlatonicSpheresCollection(np.asarray(start["pos"]), np.asarray(start["rad"])),
        ilms.LegendrePoly2P1D(order=order), comp.GlobalScalar("bkg", 0.0),
        comp.GlobalScalar("offset", 0.0), psfs.AnisotropicGaussianXYZ(sigmas=np.asarray(start["psf"]))],
        pad=pad, sigma=0.05)
    st.update(st.get("ilm").params, np.asarray(start["ilm"]))
    e0 = st.error
    say("imaging: finish")
    f = optimize.finish(st, n_loop=3, desc=None)
    fitted = st.param_tree
    error = st.error
    rmse = float(np.sqrt(np.mean((st.obj_get_positions() - np.asarray(truth["pos"])) ** 2)))
    # the truth on the same state (same drawing cubes, so the same compiled render)
    st.set_param_tree({k: np.asarray(v) for k, v in truth.items()})
    true_error = st.error
    bound = st.crb(st.param_positions())
    st.set_param_tree(fitted)
    return dict(start_error=e0, error=error, true_error=true_error, rmse=rmse,
                crb=float(np.sqrt(np.mean(bound ** 2))), finish_converged=f["converged"])


def demo(progress: Callable[[str], None]) -> str:
    r = demo_fit(progress)
    return (f"imaging (peri): 3 particles in a noisy 12x24x24 confocal image, start 0.5 px off, "
            f"PSF 20% too wide, finish (3 loops)\n"
            f"  error {r['start_error']:.4g} -> {r['error']:.4g} (at the truth {r['true_error']:.4g}); "
            f"position RMSE {r['rmse']:.3f} px vs Cramér-Rao bound {r['crb']:.3f} px\n"
            f"  finish {'met' if r['finish_converged'] else 'did not meet'} its convergence test")
