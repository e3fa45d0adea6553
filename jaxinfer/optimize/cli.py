"""``jaxinfer demo`` part for the optimize subpackage: the NIST StRD nonlinear regressions."""

from __future__ import annotations

import time


def demo(progress) -> str:
    """Fit the 27 NIST StRD problems from Start 1 with :func:`curve_fit`; return a table.

    ``progress(message)`` is called before each compiled batch.
    """
    from jaxinfer.optimize import nist

    problems = nist.load_all()
    start = time.perf_counter()
    results = nist.fit_all(list(problems.values()), starts=(0,), progress=progress)
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
