"""peri's add-subtract of particles (``opt.addsubtract``): find missing particles in the
residuals, remove spurious ones, keep each change only if it lowers the error enough.

A change is kept when the error falls by at least ``max(im_change_frac * |Δresiduals|², min_derr)``
(``min_derr='3sig'``: 3 sigma), peri's ``should_particle_exist``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from jaxinfer.imaging.opt import optimize as opt

__all__ = ["feature_guess", "guess_invert", "guess_add_radii", "local_max_featuring",
           "check_add_particles", "check_remove_particle", "should_particle_exist",
           "add_missing_particles", "remove_bad_particles", "add_subtract",
           "identify_misfeatured_regions", "add_subtract_locally"]


def _sphere_footprint(radius):
    r = int(np.ceil(radius))
    t = np.arange(-r, r + 1)
    z, y, x = np.meshgrid(t, t, t, indexing="ij")
    return np.sqrt(z * z + y * y + x * x) < radius


def local_max_featuring(im, radius=2.5, noise_size=1.0, bkg_size=None, minmass=1.0,
                        trim_edge=False):
    """Local maxima of the band-passed image inside a sphere of ``radius`` whose summed
    band-passed intensity over that sphere exceeds ``minmass``. Returns (positions (n, 3)
    int, masses (n,))."""
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    filtered = ndimage.gaussian_filter(np.asarray(im, float), noise_size, mode="mirror")
    filtered -= ndimage.gaussian_filter(filtered, 2 * radius if bkg_size is None else bkg_size,
                                        mode="mirror")
    footprint = _sphere_footprint(radius)
    peaks = ndimage.maximum_filter(filtered, footprint=footprint)
    mass = ndimage.convolve(filtered, footprint.astype(float), mode="mirror")
    pos = np.transpose(np.nonzero((peaks == filtered) & (mass > minmass)))
    if trim_edge:
        pos = pos[np.all(pos > 0, axis=1) & np.all(pos + 1 < np.asarray(im.shape), axis=1)]
    return pos, mass[tuple(pos.T)]


def guess_invert(st):
    """True if the particles are darker than the image (median at their centres below the
    image median)."""
    idx = np.round(st.obj_get_positions()).astype(int)
    inside = np.all((idx >= 0) & (idx < np.asarray(st.data.shape)), axis=1)
    if not inside.any():
        return True
    vals = st.data[tuple(idx[inside].T)]
    return bool(np.median(vals) < np.median(st.data))


def feature_guess(st, rad, invert=True, minmass=None, use_tp=False, trim_edge=False, **kwargs):
    """Guess particle positions from the residuals (``1 - residuals`` when ``invert``: dark
    particles). Returns (guesses (n, 3) sorted by decreasing mass, n)."""
    if use_tp:
        raise NotImplementedError("use_tp=True (trackpy) is not supported")
    if invert == "guess":
        invert = guess_invert(st)
    im = 1 - st.residuals if invert else st.residuals
    if minmass is None:
        minmass = rad ** 3 * 4 / 3.0 * np.pi * 0.01
    guess, mass = local_max_featuring(im, radius=rad, minmass=minmass, trim_edge=trim_edge)
    order = np.argsort(mass)[::-1]
    return guess[order].astype(float), int(guess.shape[0])


def guess_add_radii(st):
    """Radius for added particles: the 20th percentile of the current radii."""
    return float(np.percentile(st.obj_get_radii(), 20))


def should_particle_exist(absent_err, present_err, absent_d, present_d, im_change_frac=0.2,
                          min_derr=0.1):
    delta = np.ravel(present_d - absent_d)
    cutoff = max(im_change_frac * float(delta @ delta), min_derr)
    return (absent_err - present_err) >= cutoff


def _min_derr(st, min_derr):
    return 3 * st.sigma if min_derr == "3sig" else float(min_derr)


def check_add_particles(st, guess, rad="calc", do_opt=True, im_change_frac=0.2,
                        min_derr="3sig", **kwargs):
    """Try adding a particle at each guess (position-only LM first); keep those that lower
    the error enough. Returns (accepted count, their positions)."""
    min_derr = _min_derr(st, min_derr)
    rad = guess_add_radii(st) if rad == "calc" else float(rad)
    accepts, new_poses = 0, []
    for p0 in np.atleast_2d(guess):
        absent_err, absent_d = st.error, st.residuals
        ind = st.obj_add_particle(p0, rad)
        if do_opt:
            opt.do_levmarq_particles(st, ind, damping=1.0, max_iter=1, run_length=3,
                                     eig_update=False, include_rad=False)
        if should_particle_exist(absent_err, st.error, absent_d, st.residuals,
                                 im_change_frac=im_change_frac, min_derr=min_derr):
            accepts += 1
            new_poses.append(tuple(st.obj_get_positions()[ind].ravel()))
        else:
            st.obj_remove_particle(ind)
    return accepts, new_poses


def check_remove_particle(st, ind, im_change_frac=0.2, min_derr="3sig", **kwargs):
    """Remove particle ``ind`` and put it back unless the error stays low enough.
    Returns (killed, position, (radius,))."""
    min_derr = _min_derr(st, min_derr)
    present_err, present_d = st.error, st.residuals
    p, r = st.obj_remove_particle(ind)
    p, r = p[0], float(r[0])
    if should_particle_exist(st.error, present_err, st.residuals, present_d,
                             im_change_frac=im_change_frac, min_derr=min_derr):
        st.obj_add_particle(p, r)
        return False, tuple(p), (r,)
    return True, tuple(p), (r,)


def add_missing_particles(st, rad="calc", tries=50, **kwargs):
    """Feature the residuals and try adding up to ``tries`` particles."""
    rad = guess_add_radii(st) if rad == "calc" else float(rad)
    feature_kw = {k: kwargs[k] for k in ("invert", "minmass", "use_tp", "trim_edge") if k in kwargs}
    guess, npart = feature_guess(st, rad, **feature_kw)
    add_kw = {k: kwargs[k] for k in ("do_opt", "im_change_frac", "min_derr") if k in kwargs}
    return check_add_particles(st, guess[:min(tries, npart)], rad=rad, **add_kw)


def remove_bad_particles(st, min_rad="calc", max_rad="calc", min_edge_dist=2.0,
                         check_rad_cutoff=(3.5, 15), check_outside_im=True, tries=50,
                         im_change_frac=0.2, min_derr="3sig", **kwargs):
    """Delete particles with absurd radii outright (outside [median - 25 s, median + 15 s],
    s the std of the 10%-trimmed radii), then test-remove those with radii outside
    ``check_rad_cutoff`` or centres outside the image. Returns (removed count, positions).

    peri's ``min_edge_dist`` test subtracts the padding twice and so never fires; here it is
    the distance to the edge of the padded volume, as documented."""
    if st.N == 0:
        return 0, []
    radii = st.obj_get_radii()
    q10 = int(0.1 * radii.size)
    trimmed = np.sort(radii)[q10:radii.size - q10] if q10 else np.sort(radii)
    r_sig, r_med = float(trimmed.std()), float(np.median(radii))
    max_rad = r_med + 15 * r_sig if max_rad == "calc" else max_rad
    min_rad = r_med - 25 * r_sig if min_rad == "calc" else min_rad
    if check_rad_cutoff == "calc":
        check_rad_cutoff = (r_med - 7.5 * r_sig, r_med + 7.5 * r_sig)
    shape = np.asarray(st.data.shape, float)

    def outside(pos, margin):
        return np.any((pos < margin) | (pos > shape - 1 - margin), axis=1)

    pos = st.obj_get_positions()
    wrong = np.flatnonzero((radii < min_rad) | (radii > max_rad) |
                           outside(pos, min_edge_dist - st.pad))
    removed, delete_poses = 0, []
    for p in pos[wrong]:
        st.obj_remove_particle(st.obj_closest_particle(p))
        removed += 1
        delete_poses.append(tuple(p))
    radii, pos = st.obj_get_radii(), st.obj_get_positions()
    check = (radii < check_rad_cutoff[0]) | (radii > check_rad_cutoff[1])
    if check_outside_im:
        check |= outside(pos, 0.0)
    check_inds = np.flatnonzero(check)
    check_inds = check_inds[np.argsort(radii[check_inds])][:tries]
    for p in pos[check_inds].copy():
        killed, pp, _ = check_remove_particle(st, st.obj_closest_particle(p),
                                              im_change_frac=im_change_frac, min_derr=min_derr)
        if killed:
            removed += 1
            delete_poses.append(pp)
    return removed, delete_poses


def add_subtract(st, max_iter=7, max_npart="calc", max_mem=2e8, always_check_remove=False,
                 **kwargs):
    """Alternate removing bad particles and adding missing ones until nothing changes (at
    most ``max_iter`` loops); after more than ``max_npart`` changes (default 5% of N) refit
    the non-psf globals; finally refit each added particle (position and radius).

    Returns (total changes, removed positions (n, 3), added positions (n, 3))."""
    if max_npart == "calc":
        max_npart = 0.05 * st.N
    total, since_opt, nr = 0, 0, 1
    removed_poses, added0 = [], []
    remove_kw = {k: kwargs[k] for k in ("min_rad", "max_rad", "min_edge_dist", "check_rad_cutoff",
                                        "check_outside_im", "tries", "im_change_frac",
                                        "min_derr") if k in kwargs}
    for _ in range(max_iter):
        rposes = []
        if nr != 0 or always_check_remove:
            nr, rposes = remove_bad_particles(st, **remove_kw)
        na, aposes = add_missing_particles(st, **kwargs)
        changed = na + nr
        removed_poses.extend(rposes)
        added0.extend(aposes)
        total += changed
        since_opt += changed
        if changed == 0:
            break
        if since_opt > max_npart:
            since_opt = 0
            opt.do_levmarq(st, opt.name_globals(st, remove_params=st.get("psf").params),
                           max_iter=1, run_length=4, num_eig_dirs=3, eig_update_frequency=2,
                           use_accel=True)
    added = []
    for p in added0:
        i = st.obj_closest_particle(p)
        opt.do_levmarq_particles(st, np.array([i]), max_iter=2, damping=0.3)
        added.append(st.obj_get_positions()[i])
    return total, np.array(removed_poses).reshape(-1, 3), np.array(added).reshape(-1, 3)


def identify_misfeatured_regions(st, filter_size=5, sigma_cutoff=8.0):
    """Boxes (lists of slices) where the local residual std exceeds its mean by
    ``sigma_cutoff`` of its spread, largest first."""
    r = st.residuals
    local = np.sqrt(np.maximum(ndimage.uniform_filter(r * r, filter_size)
                               - ndimage.uniform_filter(r, filter_size) ** 2, 0))
    bad = local > local.mean() + sigma_cutoff * local.std()
    labels, n = ndimage.label(bad)
    boxes = ndimage.find_objects(labels)
    sizes = [int((labels[b] == i + 1).sum()) for i, b in enumerate(boxes)]
    return [boxes[i] for i in np.argsort(sizes)[::-1]]


def add_subtract_locally(st, region_depth=3, filter_size=5, sigma_cutoff=8, **kwargs):
    """In regions of bad fit (``identify_misfeatured_regions``), remove every particle and
    re-add particles there; stop after ``region_depth`` regions without an addition.
    Returns (net change in N, added positions)."""
    regions = identify_misfeatured_regions(st, filter_size=filter_size, sigma_cutoff=sigma_cutoff)
    n0 = st.N
    new_poses, idle = [], 0
    add_kw = {k: kwargs[k] for k in ("rad", "invert", "minmass", "im_change_frac", "min_derr",
                                     "do_opt") if k in kwargs}
    for box in regions:
        if idle >= region_depth:
            break
        lo = np.array([s.start for s in box], float)
        hi = np.array([s.stop for s in box], float)
        pos = st.obj_get_positions()
        inside = np.flatnonzero(np.all((pos >= lo - 1) & (pos <= hi), axis=1))
        if inside.size:
            st.obj_remove_particle(inside)
        accepted = 0
        for _ in range(kwargs.get("max_iter", 3)):
            rad = add_kw.get("rad", "calc")
            rad = guess_add_radii(st) if rad == "calc" and st.N else (5.0 if rad == "calc" else rad)
            guess, _ = feature_guess(st, rad, invert=add_kw.get("invert", True),
                                     minmass=add_kw.get("minmass"))
            guess = guess[np.all((guess >= lo - 1) & (guess <= hi), axis=1)]
            if guess.size == 0:
                break
            na, poses = check_add_particles(st, guess, rad=rad, **{
                k: v for k, v in add_kw.items() if k in ("im_change_frac", "min_derr", "do_opt")})
            accepted += na
            new_poses += poses
            if na == 0:
                break
        idle = 0 if accepted else idle + 1
    return st.N - n0, new_poses
