"""curve_fit against scipy.optimize.curve_fit, both in one run, on the same data and starts.

    y = a * exp(-b * x) + c + noise,   50 points on [0, 5], noise sd 0.02, start (1, 1, 0)

(a) batched: ``jax.jit(jax.vmap(curve_fit))`` over N fits (default 10,000) vs a Python loop of
    scipy's curve_fit (method 'lm'); agreement: the fraction of fits whose parameters agree
    to 1e-6 relative, and, where they do not, whose cost is lower. The default options run
    twice: under a plain ``jax.jit`` (JAX's XLA defaults) and under a jit with the XLA CPU
    options the front doors compile with (``jaxinfer.optimize._compile.compiler_options``);
    also the fast options and ``plain_first=False`` (run 2 with acceleration for every fit,
    the default before session 7).
(b) looped: a Python loop of 200 ``curve_fit`` calls of one model on new data each, no user
    ``jit`` (the front door's compile cache), vs scipy's loop on the same 200 data sets; the
    number of traces of the fit proves there was one compilation.
(c) compile time: one curve_fit (first call minus a warm call; plus the trace / lower /
    XLA-compile split of the front door's program), and one 100-D L-BFGS-B minimize of the
    Rosenbrock function.

Both the wall time and this process's CPU time are recorded, and ratios of both: on a shared
machine the wall time includes waiting for a core (the load average is recorded too), so
the CPU ratios are the ones to read there. Every timed loop / run is repeated (``--repeats``,
3 at most for (a)) and the medians are recorded, with the lists. Writes
benchmarks/results/optimize_curve_fit.json.

    python benchmarks/optimize/bench_curve_fit.py [--n 10000] [--loop 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.optimize  # noqa: E402

from jaxinfer.optimize import curve_fit, minimize  # noqa: E402
from jaxinfer.optimize._compile import trace_count  # noqa: E402

curve_fit_module = importlib.import_module("jaxinfer.optimize.curve_fit")

#: options for many small, well-conditioned fits (see docs/optimize.md):
#: one trial per damping (peri's run 1), no geodesic acceleration, Cholesky of the normal
#: equations (unrolled for n <= 8; squares the condition number)
FAST_OPTIONS = {"run_type": 1, "use_accel": False, "linear_solver": "cholesky"}

RESULTS = Path(__file__).resolve().parents[1] / "results" / "optimize_curve_fit.json"
P0 = np.array([1.0, 1.0, 0.0])


def model(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def model_np(x, a, b, c):
    return a * np.exp(-b * x) + c


def make_data(n_fits, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 5.0, 50)
    truth = np.column_stack([rng.uniform(1, 3, n_fits), rng.uniform(0.5, 2, n_fits),
                             rng.uniform(0, 1, n_fits)])
    y = truth[:, :1] * np.exp(-truth[:, 1:2] * x) + truth[:, 2:] + \
        0.02 * rng.normal(size=(n_fits, x.size))
    return x, y


class Clock:
    """Wall and process-CPU seconds of a block."""

    @staticmethod
    def median(clocks):
        """A Clock holding the median wall and CPU seconds of several, and both lists."""
        out = Clock()
        out.wall_all, out.cpu_all = [c.wall for c in clocks], [c.cpu for c in clocks]
        out.wall, out.cpu = float(np.median(out.wall_all)), float(np.median(out.cpu_all))
        return out

    def __enter__(self):
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def scipy_loop(x, y, repeats=1):
    """scipy's loop over the fits, ``repeats`` times; the Clock holds the medians."""
    clocks = []
    for _ in range(repeats):
        ref = np.full((y.shape[0], 3), np.nan)
        failures = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Clock() as clock:
                for k in range(y.shape[0]):
                    try:
                        ref[k] = scipy.optimize.curve_fit(model_np, x, y[k], p0=P0)[0]
                    except RuntimeError:
                        failures += 1
        clocks.append(clock)
    return ref, failures, Clock.median(clocks)


def agreement(x, y, popt, ref):
    per_fit = np.nanmax(np.abs(popt - ref) / np.abs(ref), axis=1)
    disagree = np.flatnonzero(~(per_fit <= 1e-6))
    ours_lower = 0
    for k in disagree:
        cost = lambda p: np.sum((model_np(x, *p) - y[k]) ** 2)  # noqa: E731
        ours_lower += bool(cost(popt[k]) <= cost(ref[k]))
    return {"fraction_agree_1e-6": float(np.mean(per_fit <= 1e-6)),
            "median_rel_diff_popt": float(np.nanmedian(per_fit)),
            "max_rel_diff_popt": float(np.nanmax(per_fit)),
            "disagreeing_fits": int(disagree.size),
            "disagreeing_where_ours_has_lower_or_equal_cost": int(ours_lower)}


def batched(x, y, ref, scipy_clock, options, jit_options=None, repeats=1):
    """``jax.jit(jax.vmap(fit))``; ``jit_options``: XLA compiler options for that jit (None:
    JAX's defaults); the run is timed ``repeats`` times (medians)."""
    def fit(yk):
        popt, _, info, _, _ = curve_fit(model, jnp.asarray(x), yk, p0=jnp.asarray(P0),
                                        full_output=True, **options)
        res = info["result"]
        return popt, res.success, res.nfev

    ys = jnp.asarray(y)
    with Clock() as compile_clock:
        compiled = jax.jit(jax.vmap(fit), compiler_options=jit_options).lower(ys).compile()
    jax.block_until_ready(compiled(ys[:1].repeat(y.shape[0], 0)))   # warm the executable
    clocks = []
    for _ in range(repeats):
        with Clock() as run_clock:
            popt, success, nfev = jax.block_until_ready(compiled(ys))
        clocks.append(run_clock)
    run_clock = Clock.median(clocks)
    popt = np.asarray(popt)
    return {"options": options, "jit_compiler_options": jit_options,
            "compile_wall_s": compile_clock.wall,
            "compile_cpu_s": compile_clock.cpu, "run_wall_s": run_clock.wall,
            "run_cpu_s": run_clock.cpu, "run_cpu_s_all": run_clock.cpu_all,
            "speedup_run_wall": scipy_clock.wall / run_clock.wall,
            "speedup_run_cpu": scipy_clock.cpu / run_clock.cpu,
            "speedup_including_compile_wall": scipy_clock.wall / (run_clock.wall
                                                                  + compile_clock.wall),
            "success_fraction": float(np.mean(np.asarray(success))),
            "mean_nfev": float(np.mean(np.asarray(nfev))), **agreement(x, y, popt, ref)}


def looped(x, y, options, repeats=1):
    """A plain Python loop of curve_fit calls: the first compiles, the rest reuse it; the
    loop is timed ``repeats`` times (medians: a single loop right after the compile varied
    by 1.7x between runs on this shared machine)."""
    traces0 = trace_count(curve_fit_module._fit)
    with Clock() as first:
        jax.block_until_ready(curve_fit(model, x, y[0], p0=P0, **options))
    popt = np.empty((y.shape[0], 3))
    per_call, clocks = [], []
    for _ in range(repeats):
        with Clock() as loop:
            for k in range(y.shape[0]):
                t0 = time.perf_counter()
                popt[k] = np.asarray(curve_fit(model, x, y[k], p0=P0, **options)[0])
                per_call.append(time.perf_counter() - t0)
        clocks.append(loop)
    loop = Clock.median(clocks)
    return popt, {"options": options, "first_call_wall_s": first.wall,
                  "first_call_cpu_s": first.cpu, "repeats": repeats, "loop_wall_s": loop.wall,
                  "loop_cpu_s": loop.cpu, "loop_cpu_s_all": loop.cpu_all,
                  "median_call_ms": 1e3 * float(np.median(per_call)),
                  "traces": trace_count(curve_fit_module._fit) - traces0}


def compile_split(x, y):
    """Trace / lower / XLA compile of the front door's program, with its compile options."""
    from jaxinfer.optimize._compile import compiler_options

    f = jax.jit(curve_fit_module._fit, static_argnums=0, compiler_options=compiler_options())
    options = curve_fit_module._lm_options({}, "lm")
    loss = options.pop("loss", ("linear", 1.0))
    solver, settings = curve_fit_module._settings(options)
    static = curve_fit_module._FitStatic(
        f=lambda xx, a, b, c: a * jnp.exp(-b * xx) + c, jac=None,
        x_treedef=jax.tree_util.tree_structure(x), x_static=(curve_fit_module._DYNAMIC,),
        sigma_kind="none", absolute_sigma=False, bounded=False, method="lm",
        full_output=False, solver=solver, loss=loss, callback=None, differentiable=False)
    arrays = (settings, (x,), y[0], P0, None, np.full(3, -np.inf), np.full(3, np.inf))
    with Clock() as trace:
        traced = f.trace(static, *arrays)
    with Clock() as lower:
        lowered = traced.lower()
    with Clock() as xla:
        lowered.compile()
    return {"trace_cpu_s": trace.cpu, "lower_cpu_s": lower.cpu, "xla_compile_cpu_s": xla.cpu,
            "xla_compile_wall_s": xla.wall, "compiler_options": compiler_options()}


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def lbfgsb_compile():
    x0 = jnp.full(100, -0.5)
    with Clock() as first:
        res = jax.block_until_ready(minimize(rosenbrock, x0, method="L-BFGS-B"))
    with Clock() as warm:
        jax.block_until_ready(minimize(rosenbrock, x0 + 0.0, method="L-BFGS-B"))
    ref = scipy.optimize.minimize(lambda v: float(rosenbrock(jnp.asarray(v))), np.asarray(x0),
                                  jac=lambda v: np.asarray(jax.grad(rosenbrock)(jnp.asarray(v))),
                                  method="L-BFGS-B")
    return {"first_call_wall_s": first.wall, "first_call_cpu_s": first.cpu,
            "warm_call_wall_s": warm.wall, "compile_wall_s_estimate": first.wall - warm.wall,
            "fun": float(res.fun), "nit": int(res.nit), "success": bool(res.success),
            "scipy_fun": float(ref.fun), "scipy_nit": int(ref.nit)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--loop", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repeats of each loop / batched run (medians)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    # (c) first: nothing compiled yet in this process
    x, y = make_data(args.loop, seed=1)
    with Clock() as first:
        jax.block_until_ready(curve_fit(model, x, y[0], p0=P0))
    with Clock() as warm:
        jax.block_until_ready(curve_fit(model, x, y[1], p0=P0))
    compile_c = {"curve_fit_first_call_wall_s": first.wall,
                 "curve_fit_first_call_cpu_s": first.cpu, "curve_fit_warm_call_wall_s": warm.wall,
                 "curve_fit_compile_wall_s_estimate": first.wall - warm.wall,
                 "split": compile_split(x, y), "lbfgsb_100d": lbfgsb_compile()}

    # (b) a Python loop of curve_fit calls on new data, no user jit
    ref_loop, _, scipy_loop_clock = scipy_loop(x, y, args.repeats)
    popt_loop, loop_default = looped(x, y, {}, args.repeats)
    _, loop_fast = looped(x, y, FAST_OPTIONS, args.repeats)
    for rec in (loop_default, loop_fast):
        rec["scipy_loop_wall_s"] = scipy_loop_clock.wall
        rec["scipy_loop_cpu_s"] = scipy_loop_clock.cpu
        rec["scipy_loop_cpu_s_all"] = scipy_loop_clock.cpu_all
        rec["ratio_to_scipy_wall"] = rec["loop_wall_s"] / scipy_loop_clock.wall
        rec["ratio_to_scipy_cpu"] = rec["loop_cpu_s"] / scipy_loop_clock.cpu
    loop_default.update(agreement(x, y, popt_loop, ref_loop))

    # (a) jit(vmap(curve_fit)) over N fits vs scipy's loop
    x, y = make_data(args.n, seed=0)
    repeats_a = max(1, min(args.repeats, 3))
    ref, failures, scipy_clock = scipy_loop(x, y, repeats_a)
    batch_default = batched(x, y, ref, scipy_clock, {}, repeats=repeats_a)
    batch_fast = batched(x, y, ref, scipy_clock, FAST_OPTIONS, repeats=repeats_a)
    # the session-6 default: peri's run 2 with acceleration for every fit from the start
    batch_robust = batched(x, y, ref, scipy_clock, {"plain_first": False}, repeats=repeats_a)
    # the same program compiled with the XLA CPU options the front doors use: the classic
    # emitters vectorise the one variadic reduction per trial (see docs/optimize.md)
    from jaxinfer.optimize._compile import compiler_options
    batch_xla = batched(x, y, ref, scipy_clock, {}, jit_options=compiler_options(),
                        repeats=repeats_a)

    record = {
        "benchmark": "exponential fits y = a exp(-b x) + c (50 points, noise 0.02), "
                     "jaxinfer.optimize.curve_fit vs scipy.optimize.curve_fit (lm)",
        "a_batched": {"n_fits": args.n, "scipy_loop_wall_s": scipy_clock.wall,
                      "scipy_loop_cpu_s": scipy_clock.cpu,
                      "scipy_loop_cpu_s_all": scipy_clock.cpu_all, "repeats": repeats_a,
                      "scipy_failures": failures,
                      "default": batch_default, "fast_options": batch_fast,
                      "plain_first_false": batch_robust,
                      "default_with_front_door_xla_options": batch_xla},
        "b_python_loop": {"n_fits": args.loop, "default": loop_default, "fast_options": loop_fast},
        "c_compile": compile_c,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "jax": jax.__version__, "scipy": scipy.__version__,
                    "device": str(jax.devices()[0]), "dtype": "float64",
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"(a) scipy loop / jit(vmap(curve_fit)), CPU-s: {batch_default['speedup_run_cpu']:.1f}x "
          f"default, {batch_fast['speedup_run_cpu']:.1f}x fast options, "
          f"{batch_robust['speedup_run_cpu']:.1f}x with plain_first=False, "
          f"{batch_xla['speedup_run_cpu']:.1f}x default with the front doors' XLA options; "
          f"(b) loop of {args.loop}: {loop_default['ratio_to_scipy_cpu']:.1f}x scipy's CPU time "
          f"({loop_default['traces']} trace); (c) first curve_fit "
          f"{compile_c['curve_fit_first_call_cpu_s']:.2f} CPU-s")
    return record


if __name__ == "__main__":
    main()
