"""peri's ``opt.optimize`` API (burn, finish, do_levmarq*, the LM* classes) over the pure fits
of :mod:`jaxinfer.imaging.fit`, with peri's defaults and stopping rules.

Differences from peri, on purpose: Jacobians are exact (autodiff), never finite differences
or decimated (``max_mem``, ``decimate``, ``eig_dl`` are accepted and ignored); particle groups
whose tiles do not overlap are fitted together in one vmapped call, and burn / finish sweep
one particle per group (``region_size=None``: a small tile per particle, many fitted at once;
peri: 40-px boxes, one after another); peri's random half-box shift
of the particle groups is off by default (``doshift=False``: a fixed layout compiles once;
``doshift=True`` or ``'alternate'`` shift deterministically, never from ``np.random``); ``desc``
saves nothing; the line minimisation (off by default in peri too) is not implemented, and
``rz_order > 0`` in do_levmarq is refused (use ``LMAugmentedState``; burn takes it). Every result says whether its test was met.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.imaging import fit as F
from jaxinfer.imaging import names as N
from jaxinfer.optimize.result import Status, status_message

__all__ = ["LMEngine", "LMFunction", "LMGlobals", "LMJoint", "LMParticles", "LMParticleGroupCollection",
           "AugmentedState", "LMAugmentedState", "do_levmarq", "do_levmarq_particles",
           "do_levmarq_all_particle_groups", "burn", "finish", "name_globals",
           "vectorize_damping", "separate_particles_into_groups"]

_ENGINE_DEFAULTS = dict(damping=1.0, increase_damp_factor=3.0, decrease_damp_factor=8.0,
                        min_eigval=1e-13, marquardt_damping=False, transtrum_damping=None,
                        use_accel=False, max_accel_correction=1.0, paramtol=1e-6,
                        errtol=1e-5, exptol=1e-3, fractol=1e-6, costol=None, max_iter=5,
                        run_length=5, update_J_frequency=1, broyden_update=True,
                        eig_update=False, eig_update_frequency=3, num_eig_dirs=8)
_IGNORED = ("eig_dl", "broyden_update_frequency", "max_mem", "opt_kwargs", "decimate",
            "min_redundant", "dl", "get_cos", "save_J", "do_calc_size", "collect_stats")


def _no_rz(rz_order):
    if int(rz_order) != 0:
        raise NotImplementedError("rz_order > 0 (LMAugmentedState, radii as a polynomial in z) "
                                  "is not implemented")


def _global_names(state, param_names, who):
    """``param_names`` as a list of the state's global parameter names; a particle parameter
    or an unknown name raises (``who``: the start of the error message)."""
    names = [param_names] if isinstance(param_names, str) else list(param_names)
    for p in names:
        if p.startswith("sph-"):
            raise ValueError(f"{who} global parameters; {p!r} is a particle parameter "
                             "(use LMParticles)")
    N.resolve_all(state.image_model, state.N, names)   # unknown names raise
    return names


def _stats_from(status, delta_vals, delta_err, exp_err, frac_err, num_iter, error):
    status = int(status)
    return {"delta_vals": float(delta_vals), "delta_err": float(delta_err),
            "exp_err": float(exp_err), "frac_err": float(frac_err), "num_iter": int(num_iter),
            "error": float(error), "converged": status < 20, "status": status,
            "message": str(status_message(status))}


class LMEngine:
    """peri's LM engine settings (same keywords and defaults); subclasses say what is fitted.

    ``do_run_1`` / ``do_run_2`` run peri's two step policies for up to ``max_iter``
    iterations (one compiled LM run); ``do_internal_run`` is one more ``do_run_2`` iteration
    (the internal run on the same Jacobian happens inside every ``do_run_2`` iteration).
    After a run: ``J`` (n_params, n_residuals, peri's layout), ``JTJ``, ``damping``,
    ``get_termination_stats()`` (with ``converged``: whether a convergence test passed)."""

    def _keep(self, result, error):
        """Keep an LM run's result and peri's termination stats (``error``: the final error)."""
        self._result = result
        extra = result.extra
        self._stats = _stats_from(result.status, extra["delta_vals"], extra["delta_err"],
                                  extra["exp_err"], extra["frac_err"], result.nit, error)

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(_ENGINE_DEFAULTS) - set(_IGNORED)
        if unknown:
            raise TypeError(f"unknown LM option(s) {sorted(unknown)}; expected any of "
                            f"{sorted(_ENGINE_DEFAULTS)}")
        self._options = dict(_ENGINE_DEFAULTS)
        self._options.update({k: v for k, v in kwargs.items() if k in _ENGINE_DEFAULTS})
        self._initial_damping = self._options["damping"]
        self._result = None
        self._stats = None

    # what subclasses provide
    def _run(self, run_type, max_iter):
        raise NotImplementedError

    def reset(self, new_damping=None):
        if new_damping is not None:
            self._options["damping"] = new_damping
        self._result, self._stats = None, None

    def do_run_1(self):
        self._run(1, self._options["max_iter"])

    def do_run_2(self):
        self._run(2, self._options["max_iter"])

    def do_internal_run(self):
        self._run(2, 1)

    def get_termination_stats(self, get_cos=True):
        if self._stats is None:
            raise RuntimeError("no run yet: call do_run_1() or do_run_2() first")
        return dict(self._stats)

    def check_completion(self):
        return bool(self._stats and self._stats["converged"])

    def check_termination(self):
        return self._stats is not None

    @property
    def J(self):
        """The last fit's Jacobian as peri holds it: (n parameters, n residuals)."""
        if self._result is None or self._result.jac is None:
            return None
        jac, cols = np.asarray(self._result.jac), self._jac_columns()
        return (jac if cols is None else jac[:, cols]).T

    def _jac_columns(self):
        """The columns of the fit's J that are this engine's parameters (None: all)."""
        return None

    @property
    def JTJ(self):
        j = self.J
        return None if j is None else j @ j.T

    @property
    def damping(self):
        if self._result is None:
            return np.atleast_1d(np.asarray(self._options["damping"], float))
        return np.atleast_1d(np.asarray(self._result.extra["damping"], float))

    def _engine_options(self, run_type, max_iter):
        opts = dict(self._options)
        opts.pop("damping")
        opts.update(run_type=run_type, max_iter=max_iter)
        return opts


@functools.partial(jax.jit, static_argnums=(0, 1))
def _fit_function(func, structure, data, p0, func_args, func_kwargs, numbers):
    def res(p, args):
        return (data - func(p, *args[0], **args[1])).ravel()

    return F.run_lm(res, p0, (func_args, func_kwargs), structure, numbers)


class LMFunction(LMEngine):
    """LM on a user function: minimise ``|data - func(params, *func_args, **func_kwargs)|²``.
    ``func`` must be a JAX-traceable function of the flat parameter vector."""

    def __init__(self, data, func, p0, func_args=(), func_kwargs=None, dl=2e-5, **kwargs):
        super().__init__(**kwargs)
        self.data = np.asarray(data, float)
        self.func = func
        self.param_vals = np.asarray(p0, float).copy()
        self.func_args, self.func_kwargs = tuple(func_args), dict(func_kwargs or {})

    def _run(self, run_type, max_iter):
        opts = F.lm_options(damping=float(np.mean(self._options["damping"])),
                            **self._engine_options(run_type, max_iter))
        structure, numbers = F.split_options(opts)
        r = _fit_function(self.func, structure, jnp.asarray(self.data),
                          jnp.asarray(self.param_vals), self.func_args, self.func_kwargs,
                          numbers)
        self.param_vals = np.asarray(r.x, float)
        self._keep(r, 2 * float(r.fun))

    @property
    def error(self):
        r = self.data - np.asarray(self.func(self.param_vals, *self.func_args, **self.func_kwargs))
        return float(np.sum(r * r))


class LMGlobals(LMEngine):
    """LM on the global parameters ``param_names`` of a state, over the whole image."""

    def __init__(self, state, param_names, max_mem=1e9, opt_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        self.state = state
        self.param_names = _global_names(state, param_names, "LMGlobals fits")

    def _run(self, run_type, max_iter):
        st = self.state
        refs = N.resolve_all(st.image_model, st.N, self.param_names)
        damping = self._options["damping"]
        # the state keeps the largest blur margin used, so a shrinking PSF does not recompile
        margin = F.blur_margin(st.image_model, np.asarray(st.param_tree["psf"]),
                               st.__dict__.get("_blur_margin"))
        st._blur_margin = margin
        params, r = F.fit_globals(st.image_model, st.param_tree, st.data_array, refs,
                                  damping=damping, margin=margin,
                                  **self._engine_options(run_type, max_iter))
        st.set_param_tree(params)
        self._keep(r, st.error)

    def _jac_columns(self):
        return _global_columns(self.state, self.param_names)


def _global_columns(st, param_names):
    """The columns of ``param_names`` in a fit's J over every global (``fit.global_refs``)."""
    all_refs = F.global_refs(st.image_model)
    return [all_refs.index(r) for r in N.resolve_all(st.image_model, st.N, param_names)]


class LMJoint(LMEngine):
    """LM on the global parameters ``param_names`` and every particle's position (and radius,
    ``include_rad``) together, on the whole image (:func:`~jaxinfer.imaging.fit.fit_joint`;
    not in peri, which alternates :class:`LMGlobals` and :class:`LMParticleGroupCollection`).
    The fit works on J^T J and J^T r assembled from the particles' tiles and never forms the
    (n_pixels, n_globals + 4 N) J, so ``J`` and ``JTJ`` are None."""

    def __init__(self, state, param_names, include_rad=True, max_mem=1e9, opt_kwargs=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.state = state
        self.param_names = _global_names(state, param_names, "LMJoint fits")
        self.include_rad = bool(include_rad)

    def _run(self, run_type, max_iter):
        st = self.state
        refs = N.resolve_all(st.image_model, st.N, self.param_names)
        # the state keeps the largest margin and particle layout used: one compiled program
        params, r, margin, key = F.fit_joint(
            st.image_model, st.param_tree, st.data_array, refs,
            damping=self._options["damping"], margin=st.__dict__.get("_blur_margin"),
            floor=st.__dict__.get("_joint_layout"), include_rad=self.include_rad,
            **self._engine_options(run_type, max_iter))
        st._blur_margin, st._joint_layout = margin, key
        st.set_param_tree(params)
        self._keep(r, st.error)

    def _jac_columns(self):
        st = self.state
        n_g, n_all = len(F.global_refs(st.image_model)), st.param_tree["pos"].shape[0]
        return _global_columns(st, self.param_names) + list(range(n_g, n_g + 4 * n_all))


class AugmentedState:
    """peri's ``AugmentedState``: a state, the global parameters ``param_names`` and the
    radii as ``a_i = a_i0 exp(legval(zs_i, rz))``, ``zs = (z_i - Z/2) / (Z/2)``, with
    ``rz_order`` Legendre coefficients starting at 0 (``a_i0``: the radii when it was made)."""

    def __init__(self, state, param_names, rz_order=3):
        if int(rz_order) < 1:
            raise ValueError(f"rz_order must be >= 1, got {rz_order!r}")
        self.state = state
        self.param_names = _global_names(state, param_names, "AugmentedState takes")
        self.rz_order = int(rz_order)
        self.reset()

    def reset(self):
        self.rad0 = np.asarray(self.state.obj_get_radii(), float).copy()
        self.rz = np.zeros(self.rz_order)


class LMAugmentedState(LMEngine):
    """LM on an :class:`AugmentedState`: its globals and the R(z) coefficients together, on
    the whole image (peri's ``LMAugmentedState``; same facade as :class:`LMGlobals`).
    ``J``: (n_globals + rz_order, n_pixels), the globals in ``param_names`` order."""

    def __init__(self, aug_state, max_mem=1e9, opt_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(aug_state, AugmentedState):
            raise TypeError(f"LMAugmentedState takes an AugmentedState, got "
                            f"{type(aug_state).__name__}")
        self.aug_state = aug_state

    def reset(self, new_damping=None):
        super().reset(new_damping)
        if hasattr(self, "aug_state"):
            self.aug_state.reset()

    def _run(self, run_type, max_iter):
        aug = self.aug_state
        st = aug.state
        refs = N.resolve_all(st.image_model, st.N, aug.param_names)
        rad0 = np.zeros(st.param_tree["rad"].shape[0])
        rad0[:st.N] = aug.rad0
        params, r = F.fit_augmented(st.image_model, st.param_tree, st.data_array, refs, aug.rz,
                                    rad0, damping=float(np.mean(self._options["damping"])),
                                    **self._engine_options(run_type, max_iter))
        st.set_param_tree(params)
        aug.rz = np.asarray(r.x[-aug.rz_order:], float)
        self._keep(r, st.error)

    def _jac_columns(self):
        st = self.aug_state.state
        all_refs = F.global_refs(st.image_model)
        refs = N.resolve_all(st.image_model, st.N, self.aug_state.param_names)
        return [all_refs.index(r) for r in refs] + list(
            range(len(all_refs), len(all_refs) + self.aug_state.rz_order))


class _ParticleEngine(LMEngine):
    include_rad = True

    def _fit_groups(self, groups, run_type, max_iter, region_size):
        st = self.state
        # the state remembers the largest layout it has used per region size, so that the
        # sweeps of burn and finish keep one layout (one compiled program)
        floors = st.__dict__.setdefault("_group_layouts", {})
        params, stats, plan = F.fit_particle_groups(
            st.image_model, st.param_tree, st.data_array, groups, include_rad=self.include_rad,
            region_size=region_size, floor=floors.get(region_size),
            damping=float(np.mean(self._options["damping"])),
            **self._engine_options(run_type, max_iter))
        floors[region_size] = plan["key"]
        st.set_param_tree(params)
        used = plan["index"][..., 0] >= 0
        status = np.asarray(stats["status"])[used]
        self.stats = [_stats_from(s, dv, de, ee, fe, ni, 2 * c) for s, dv, de, ee, fe, ni, c in zip(
            status, *(np.asarray(stats[k])[used] for k in
                      ("delta_vals", "delta_err", "exp_err", "frac_err", "nit", "cost")))]
        self._stats = {
            "delta_vals": max(s["delta_vals"] for s in self.stats),
            "delta_err": sum(s["delta_err"] for s in self.stats),
            "exp_err": sum(s["exp_err"] for s in self.stats),
            "frac_err": max(s["frac_err"] for s in self.stats),
            "num_iter": max(s["num_iter"] for s in self.stats),
            "error": st.error,
            "converged": all(s["converged"] for s in self.stats),
            "groups_converged": int(sum(s["converged"] for s in self.stats)),
            "n_groups": len(self.stats)}
        self._result = None


class LMParticles(_ParticleEngine):
    """LM on the positions (and radii, ``include_rad``) of the particles ``particles``."""

    def __init__(self, state, particles, include_rad=True, **kwargs):
        super().__init__(**kwargs)
        self.state = state
        self.particles = np.atleast_1d(np.asarray(particles, int))
        if self.particles.size == 0 or self.particles.min() < 0 or self.particles.max() >= state.N:
            raise ValueError(f"particles must be indices in [0, {state.N}), got {self.particles.tolist()[:10]}")
        self.include_rad = bool(include_rad)

    def _run(self, run_type, max_iter):
        self._fit_groups([self.particles], run_type, max_iter, region_size=1)

    def set_particles(self, particles, new_damping=None):
        self.particles = np.atleast_1d(np.asarray(particles, int))
        self.reset(new_damping)


def separate_particles_into_groups(s, region_size=40, bounds=None, doshift=False):
    """peri's grouping: boxes of ``region_size`` over the image (shifted by half a box when
    ``doshift``); returns the non-empty groups as int arrays."""
    if bounds is not None:
        raise NotImplementedError("bounds is not supported")
    return F.group_particles(s.obj_get_positions(), s.image_model.shape, region_size,
                             shift=bool(doshift))


class LMParticleGroupCollection(_ParticleEngine):
    """LM on every particle group of a state; groups with disjoint tiles are fitted together.
    ``self.stats``: one termination dict per group; ``particle_groups``: the groups."""

    def __init__(self, state, region_size=40, do_calc_size=True, max_mem=1e9, get_cos=False,
                 save_J=False, include_rad=True, doshift=False, **kwargs):
        super().__init__(**kwargs)
        self.state = state
        self.region_size = region_size
        if doshift not in (True, False, "alternate"):
            raise ValueError(f"doshift must be True, False or 'alternate', got {doshift!r}")
        self.doshift = doshift
        self.include_rad = bool(include_rad)
        self.reset()

    def reset(self, new_damping=None):
        super().reset(new_damping)
        shift = self.doshift
        if shift == "alternate":
            shift = getattr(self.state, "_group_shift", False)
            self.state._group_shift = not shift
        self.particle_groups = separate_particles_into_groups(self.state, self.region_size,
                                                              doshift=shift)

    def _run(self, run_type, max_iter):
        if self.state.N == 0:
            self.stats, self._stats = [], {"converged": True, "n_groups": 0, "error": self.state.error}
            return
        self._fit_groups(self.particle_groups, run_type, max_iter, self.region_size)


# --------------------------------------------------------------------------------------------
# peri's convenience functions


def name_globals(s, remove_params=None):
    """All global parameter names of ``s`` except ``remove_params``."""
    out = s.globals()
    for p in set(remove_params or []):
        if p in out:
            out.remove(p)
    return out


def vectorize_damping(params, damping=1.0, increase_list=(("psf-", 1e4),)):
    """peri's damping vector: ``damping`` times each factor whose name fragment is in the
    parameter's name."""
    vec = np.ones(len(params)) * damping
    for frag, factor in increase_list:
        for i, p in enumerate(params):
            if frag in p:
                vec[i] *= factor
    return vec


def do_levmarq(s, param_names, damping=0.1, decrease_damp_factor=10., run_length=6,
               eig_update=True, collect_stats=False, rz_order=0, run_type=2, **kwargs):
    """LM on global parameters (peri's defaults). Returns the termination stats if
    ``collect_stats``."""
    _no_rz(rz_order)
    lm = LMGlobals(s, param_names, damping=damping, decrease_damp_factor=decrease_damp_factor,
                   run_length=run_length, eig_update=eig_update, **kwargs)
    lm.do_run_2() if run_type == 2 else lm.do_run_1()
    if collect_stats:
        return lm.get_termination_stats()


def do_levmarq_particles(s, particles, damping=1.0, decrease_damp_factor=10., run_length=4,
                         collect_stats=False, max_iter=2, **kwargs):
    """LM on a set of particles (peri's defaults)."""
    lp = LMParticles(s, particles, damping=damping, decrease_damp_factor=decrease_damp_factor,
                     run_length=run_length, max_iter=max_iter, **kwargs)
    lp.do_run_2()
    if collect_stats:
        return lp.get_termination_stats()


def do_levmarq_all_particle_groups(s, region_size=40, max_iter=2, damping=1.0,
                                   decrease_damp_factor=10., run_length=4, collect_stats=False,
                                   **kwargs):
    """LM on every particle group (peri's defaults)."""
    lp = LMParticleGroupCollection(s, region_size=region_size, max_iter=max_iter,
                                   damping=damping, decrease_damp_factor=decrease_damp_factor,
                                   run_length=run_length, **kwargs)
    lp.do_run_2()
    if collect_stats:
        return lp.stats


_BAD_DAMP = 1e7


def burn(s, n_loop=6, collect_stats=False, desc="", rz_order=0, fractol=1e-4, errtol=1e-2,
         mode="burn", max_mem=1e9, include_rad=True, do_line_min="default", partial_log=False,
         dowarn=True, progress=None, joint=True):
    """peri's burn: alternate a globals LM and an all-particle-groups LM, up to ``n_loop``
    times, until the error changes by less than ``fractol`` (relative) or ``errtol``.

    rz_order > 0: each globals step also fits the radii's dependence on z (peri's
    LMAugmentedState, scalar damping 1).
    mode : 'burn' (globals without psf and zscale, 2 iterations, geodesic acceleration),
    'do-particles' (only the brightness scales; globals skipped in loop 0) or 'polish' (all
    globals, 1 iteration). ``progress(dict)`` (optional) is called after every half-loop.
    joint : True (the default; not in peri): the loop's globals and every particle in one LM
    (:class:`LMJoint`, on normal equations assembled from the particles' tiles; Marquardt
    damping, no geodesic acceleration); with ``rz_order=0`` and a mode other than
    'do-particles' the loops are one LM run of up to ``n_loop`` times the loop's iterations
    whose own errtol / fractol tests are the loop test (``all_loop_values`` then holds the
    end, ``global_stats`` that run's stats, ``particle_stats`` nothing); otherwise each loop
    with globals is one joint LM; False: peri's alternation, a globals LM then a sweep of
    every particle.
    'auto' is True (kept from when the joint J was dense). On the 32x64x64 benchmark the
    joint burn + finish is about 2x faster warm than the alternation and ends lower
    (-0.103% vs -0.076% of the truth's error), meeting both loop tests
    (docs/imaging.md).
    Returns ``{'converged', 'all_loop_values'}`` (+ stats with ``collect_stats``);
    ``converged`` is True only if the loop test was met."""
    rz_order = int(rz_order)
    if rz_order < 0:
        raise ValueError(f"rz_order must be >= 0, got {rz_order}")
    mode = mode.lower()
    if mode not in ("burn", "do-particles", "polish"):
        raise ValueError(f"mode must be one of 'burn', 'do-particles', 'polish'; got {mode!r}")
    if do_line_min is True:
        raise NotImplementedError("do_line_min=True is not implemented")
    eig_update = mode != "do-particles"
    glbl_run_length = 3 if mode == "do-particles" else 6
    glbl_max_iter = 2 if mode == "burn" else 1
    use_accel = mode == "burn"
    if mode == "do-particles":
        glbl = [p for p in ("ilm-scale", "ilm-xy-0-0", "bkg-xy-0-0", "offset") if p in s.params]
    else:
        remove = None if mode == "polish" else s.get("psf").params + ["zscale"]
        glbl = name_globals(s, remove_params=remove)
    joint = _use_joint(s, joint)
    lm_stats, lp_stats, loop_values = [], [], []
    if joint and rz_order == 0 and mode != "do-particles" and glbl:
        # the loops as one LM run of up to n_loop * (the loop's iterations) with the loop
        # test as its own (per iteration): J^T J once per iteration, not again per loop
        lm = LMJoint(s, glbl, include_rad=include_rad, max_iter=glbl_max_iter * n_loop,
                     run_length=glbl_run_length, marquardt_damping=True, damping=1.0,
                     decrease_damp_factor=10., fractol=fractol, errtol=errtol)
        lm.do_run_2()
        lm_stats.append(lm.get_termination_stats())
        if progress:
            progress({"stage": "joint", "loop": lm_stats[0]["num_iter"] - 1, "error": s.error})
        out = {"converged": lm_stats[0]["converged"], "all_loop_values": [np.asarray(s.values)]}
        if collect_stats:
            out.update(global_stats=lm_stats, particle_stats=lp_stats, line_stats=[])
        return out
    converged = False
    for a in range(n_loop):
        start_err = s.error
        damp = vectorize_damping(glbl, damping=1.0, increase_list=[["psf-", 3e1]] + [
            [n, _BAD_DAMP] for n in ("ilm-scale", "ilm-off", "ilm-z-0", "bkg-z-0")])
        with_globals = (a != 0 or mode != "do-particles") and bool(glbl)
        together = joint and with_globals and rz_order == 0
        if together:
            lm = LMJoint(s, glbl, include_rad=include_rad, max_iter=glbl_max_iter,
                         run_length=glbl_run_length, marquardt_damping=True,
                         damping=1.0 if a == 0 else 0.1, decrease_damp_factor=10.,
                         fractol=0.1 * fractol)
            lm.do_run_2()
            lm_stats.append(lm.get_termination_stats())
            if progress:
                progress({"stage": "joint", "loop": a, "error": s.error})
        elif with_globals:
            if rz_order > 0:
                # peri: the globals and R(z) together (LMAugmentedState); damping scalar 1
                lm = LMAugmentedState(AugmentedState(s, glbl, rz_order=rz_order),
                                      max_iter=glbl_max_iter, run_length=glbl_run_length,
                                      damping=1.0, decrease_damp_factor=10.,
                                      use_accel=use_accel, fractol=0.1 * fractol)
            else:
                lm = LMGlobals(s, glbl, max_iter=glbl_max_iter, run_length=glbl_run_length,
                               eig_update=eig_update, num_eig_dirs=10, eig_update_frequency=3,
                               damping=damp, decrease_damp_factor=10., use_accel=use_accel,
                               fractol=0.1 * fractol)
            lm.do_run_2()
            lm_stats.append(lm.get_termination_stats())
            if progress:
                progress({"stage": "globals", "loop": a, "error": s.error})
        loop_values.append(np.asarray(s.values))
        if not together:
            _sweep(s, a, fractol, include_rad, lp_stats, progress)
            loop_values.append(np.asarray(s.values))
        new_err = s.error
        derr = start_err - new_err
        converged = bool((derr / new_err < fractol) or (derr < errtol))
        if converged:
            break
    out = {"converged": converged, "all_loop_values": loop_values}
    if collect_stats:
        out.update(global_stats=lm_stats, particle_stats=lp_stats, line_stats=[])
    return out


def _use_joint(s, joint):
    return True if joint == "auto" else bool(joint)


def _sweep(s, a, fractol, include_rad, lp_stats, progress):
    """burn's particle half-loop: every particle its own group, one LM iteration each."""
    lp = LMParticleGroupCollection(s, region_size=None, max_iter=1, run_length=4,
                                   eig_update=False, damping=1.0 if a == 0 else 1e-2,
                                   decrease_damp_factor=10., fractol=0.1 * fractol,
                                   include_rad=include_rad)
    lp.do_run_2()
    lp_stats.append(lp.stats)
    if progress:
        progress({"stage": "particles", "loop": a, "error": s.error})


def finish(s, desc="finish", n_loop=4, max_mem=1e9, separate_psf=False, fractol=1e-7,
           errtol=1e-3, dowarn=True, progress=None, joint=True):
    """peri's finish: per loop, the globals (one LM iteration, all pixels), then every
    particle group (one iteration); stop when the error changes by less than ``fractol``
    (relative) or ``errtol``.

    separate_psf : False (the default here; peri's default is True) fits the psf together
    with the other globals in that one LM iteration; True holds it out and fits it alone
    afterwards (up to 4 iterations), as peri does by default. The PSF width is coupled to the
    illumination, so fitted apart it converges slowly: on the 32x64x64 benchmark (PSF 20% too
    wide after burn), 4 loops of peri's way end with psf-sigy/x 2.5% wide and the error
    0.17% above the truth's (peri 0.1.3 itself: +0.16%); fitted together, psf-sigy/x within
    0.3% and the error 0.07% below the truth's (the fit also explains some noise).
    joint : True (the default; not in peri): each loop is one LM iteration over the globals
    and every particle together (:class:`LMJoint`, damping 0.1, Marquardt); without
    ``separate_psf`` the loops are one LM run of up to ``n_loop`` iterations whose own
    errtol / fractol tests are the loop test (``loop_values`` then holds the start and the
    end), with it each loop is followed by the PSF step; False: peri's globals step then a
    particle sweep; 'auto': as :func:`burn`.
    Returns ``{'converged', 'loop_values'}``; ``converged`` is True only if the test was met."""
    psf_names = s.get("psf").params
    glbl = name_globals(s, remove_params=psf_names if separate_psf else None)
    joint = _use_joint(s, joint)
    values = [np.asarray(s.values)]
    if joint and not separate_psf:
        # the loops as one LM run of up to n_loop iterations with the loop test as its own
        # (per iteration: error change < errtol or relative < fractol): J^T J is assembled
        # once per iteration, not again at the start of each loop
        lm = LMJoint(s, glbl, max_iter=n_loop, run_length=6, marquardt_damping=True,
                     damping=0.1, decrease_damp_factor=20., fractol=fractol, errtol=errtol)
        lm.do_run_2()
        stats = lm.get_termination_stats()
        if progress:
            progress({"stage": "joint", "loop": stats["num_iter"] - 1, "error": s.error})
        values.append(np.asarray(s.values))
        return {"converged": stats["converged"], "loop_values": np.array(values)}
    converged = False
    for a in range(n_loop):
        start_err = s.error
        if joint:
            LMJoint(s, glbl, max_iter=1, run_length=6, marquardt_damping=True, damping=0.1,
                    decrease_damp_factor=20., fractol=fractol).do_run_2()
        elif glbl:
            do_levmarq(s, glbl, damping=0.1, decrease_damp_factor=20., max_iter=1,
                       eig_update=False)
        if separate_psf:
            do_levmarq(s, psf_names, max_iter=4, eig_update=False)
        if progress:
            progress({"stage": "joint" if joint else "globals", "loop": a, "error": s.error})
        if not joint:
            do_levmarq_all_particle_groups(s, region_size=None, max_iter=1)
            if progress:
                progress({"stage": "particles", "loop": a, "error": s.error})
        values.append(np.asarray(s.values))
        new_err = s.error
        derr = start_err - new_err
        converged = bool((derr / new_err < fractol) or (derr < errtol))
        if converged:
            break
    return {"converged": converged, "loop_values": np.array(values)}
