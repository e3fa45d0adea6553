"""Markdown tables from benchmarks/results/spt_tramway.json and spt_scaling.json.

    .venv/bin/python benchmarks/spt/bench_table.py
"""

import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "..", "results")


def _f(x, fmt="{:.3g}"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return fmt.format(x)


def _ratio(x):
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.0f}" if x >= 10 else f"{x:.2f}"


def tramway_table(path):
    with open(path) as fd:
        r = json.load(fd)
    m = r["machine"]
    lines = [f"Machine: {m['cpu_count']} CPUs ({m.get('affinity')} usable), jax {m['jax']}, "
             f"{m['device']}, float64. Data: {r['data']['translocations']} translocations "
             f"(simulated, known D and V), sigma = {r['sigma']} µm. TRamWAy capped at "
             f"{r['cap_s']:.0f} s per mode (k-means: see rows).", "",
             "| partition | mode | TRamWAy 0.7 | jaxinfer (cold / warm) | speed-up (cold / warm) "
             "| objective TRamWAy → jaxinfer | map diff (RMSE D / V) | RMSE vs truth D: "
             "TRamWAy / jaxinfer |",
             "|---|---|---|---|---|---|---|---|"]
    for name, c in r["configs"].items():
        label = f"{name} ({c['cells_with_data']} cells)"
        for mode, e in c["modes"].items():
            j = e["jaxinfer"]
            t = e.get("tramway") or {}
            if t:
                state = ("converged" if t.get("converged") else
                         "cap hit, no iterate" if t.get("error") else
                         "not converged (cap)" if t.get("interrupted") else "not converged")
                tram = f"{_f(t.get('seconds'), '{:.1f}')} s, {state}"
                speed = (f"×{_ratio(e.get('time_ratio_tramway_over_jaxinfer'))} / "
                         f"×{_ratio(e.get('time_ratio_warm'))}")
                if not t.get("converged"):
                    speed = "≥ " + speed
            else:
                tram, speed = "–", "–"
            jx = (f"{_f(j['seconds_first'], '{:.2f}')} / {_f(j['seconds_warm'], '{:.2f}')} s"
                  + ("" if j.get("converged") else " (not conv.)"))
            obj = f"{_f(t.get('objective'), '{:.1f}')} → {_f(j.get('objective'), '{:.1f}')}"
            diff = e.get("map_difference", {})
            dd = diff.get("diffusivity", {}).get("rmse")
            dv = diff.get("potential", {}).get("rmse")
            mdiff = f"{_f(dd)} / {_f(dv)}" if diff else "–"
            rt = (t.get("rmse_vs_truth") or {}).get("diffusivity")
            rj = (j.get("rmse_vs_truth") or {}).get("diffusivity")
            lines.append(f"| {label} | {mode} | {tram} | {jx} | {speed} | {obj} | {mdiff} | "
                         f"{_f(rt)} / {_f(rj)} |")
    return "\n".join(lines)


def scaling_table(path):
    with open(path) as fd:
        r = json.load(fd)
    lines = ["| cells | translocations | mode | first call (s) | warm (s) | iterations | "
             "converged | RMSE D / V |", "|---|---|---|---|---|---|---|---|"]
    for c in r["cases"]:
        if "skipped" in c:
            lines.append(f"| {c['cells']} | {c['translocations']} | – | skipped ({c['skipped']}) "
                         f"| | | | |")
            continue
        e = c["rmse_vs_truth"]
        lines.append(f"| {c['cells']} | {c['translocations']} | {c['mode']} | "
                     f"{c['seconds_first']:.2f} | {c['seconds_warm']:.2f} | {c['nit']} | "
                     f"{c['converged']} | {_f(e.get('diffusivity'))} / {_f(e.get('potential'))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    out = []
    scal = os.path.join(RESULTS, "spt_scaling.json")
    for name in ("spt_tramway.json", "spt_tramway_kmeans.json"):
        tram = os.path.join(RESULTS, name)
        if os.path.exists(tram):
            out.append(f"\n{name}:\n\n" + tramway_table(tram))
    if os.path.exists(scal):
        out.append("\n" + scaling_table(scal))
    print("\n".join(out) if out else "no results yet", file=sys.stdout)
