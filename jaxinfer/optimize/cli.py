"""``jaxinfer demo`` part for the optimize subpackage: the NIST StRD nonlinear regressions."""

from __future__ import annotations

import inspect
import time


def _batches(problems):
    """Problems that share a model and data size, fitted together by one compiled batch."""
    groups = {}
    for prob in problems:
        groups.setdefault((prob.model, prob.y.shape[0], prob.x.shape), []).append(prob)
    return list(groups.values())


def demo(progress) -> str:
    """Fit the 27 NIST StRD problems from Start 1 with :func:`curve_fit`; return a table.

    A progress bar on stderr advances per compiled batch; without the persistent compilation
    cache it also shows the LM iterations of the batch as they run (``progress`` is not
    used: the bar replaces its messages).
    """
    import jax

    from jaxinfer.cli import ProgressBar
    from jaxinfer.optimize import nist
    from jaxinfer.optimize.least_squares import least_squares

    problems = nist.load_all()
    # per-iteration progress is a host callback, and JAX does not store programs with host
    # callbacks in the persistent compilation cache: with the cache on (the CLI's default)
    # the bar advances per batch, so that a second run compiles nothing
    live = ("callback" in inspect.signature(least_squares).parameters
            and not jax.config.jax_compilation_cache_dir)
    bar = ProgressBar(total=len(problems), title="NIST")
    results = {}
    start = time.perf_counter()
    # 27 fits of a few ms each but ~20 programs to compile: compile time is the cost. XLA's
    # optimisations stay on: with them off (jax_disable_most_optimizations) the rounding moved
    # enough that MGH17 and BoxBOD from Start 1 stopped by XTOL at wrong answers and said
    # success, where the tests' fits restart (MGH17) or report the failure (BoxBOD)
    for members in _batches(problems.values()):
        bar.start(", ".join(p.name for p in members), items=len(members))
        results.update(nist.fit_all(members, starts=(0,),
                                    **({"callback": bar} if live else {})))
    bar.close()
    elapsed = time.perf_counter() - start
    lines = [
        "NIST StRD nonlinear least squares, Start 1, jaxinfer.optimize.curve_fit",
        "digits = significant digits agreeing with the certified parameters and standard "
        "deviations (min over both)",
        f"{'data set':10s} {'difficulty':10s} {'digits':>6s} {'nfev':>6s} {'njev':>5s}  success",
    ]
    good = 0
    for name, prob in problems.items():
        rec = results[(name, 0)]
        good += rec["digits"] >= 6
        lines.append(f"{name:10s} {prob.difficulty:10s} {rec['digits']:6.1f} {rec['nfev']:6d} "
                     f"{rec['njev']:5d}  {rec['success']}")
    lines.append(f"{good}/{len(problems)} fits agree to >= 6 digits ({elapsed:.1f} s including "
                 "compilation)")
    return "\n".join(lines)
