"""``jaxinfer spt ...``: maps from trajectory files on the command line, and the spt demo.

    jaxinfer spt infer TRAJECTORIES --tessellation grid --cells 400 --mode dv --sigma 0.02 \\
        --diffusivity-prior 1 --potential-prior 1 --out maps.csv --plot maps.png

The trajectory file is a text table ``n x y [z] t`` (TRamWAy's headerless layout) or a CSV
with a header naming the columns. Progress goes to stderr; the map table (one row per cell:
cell index, centre, features) goes to ``--out`` (CSV) or to stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from typing import Callable, Optional

import numpy as np
import pandas as pd

TESSELLATIONS = ("grid", "hexagon", "kmeans")
PLOT_INSTALL = 'pip install "jaxinfer[plot]"'
# the Python-only options named in library errors -> the options of this command
_CLI_SPELLING = {"drop_invalid=True": "--drop-invalid", "sort=True": "--sort",
                 "frame_interval=<seconds per frame> (CLI --frame-interval)":
                     "--frame-interval SECONDS"}


def cli_modes() -> tuple:
    """Modes offered by ``spt infer --mode``: every name of the registry
    (:mod:`jaxinfer.spt.modes`) that needs only trajectories (not an earlier map)."""
    from jaxinfer.spt.modes import MODES, resolve
    from jaxinfer.spt.settings import PRIOR_NAMES

    return tuple(m for m in MODES if not resolve(m, PRIOR_NAMES).needs_input_maps)


def _mode_help() -> str:
    from jaxinfer.spt.modes import REGISTRY

    lines = ["inference mode (default: d). d, dd, df: per cell without priors, smoothed "
             "when a prior is given (as TRamWAy); degraded.* = unsmooth.*; standard.* = "
             "smooth.*."]
    lines += [f"{m.name}: {m.summary}." for m in REGISTRY.values() if not m.needs_input_maps]
    return " ".join(lines)


__all__ = ["register", "demo", "main", "run_infer", "partition_for"]


# --------------------------------------------------------------------------- building blocks


def partition_for(df: pd.DataFrame, tessellation: str, cells: int, *, lower_bound=None,
                  upper_bound=None, min_location_count=None):
    """Tessellate ``df`` with about ``cells`` cells.

    grid: ``round(cells ** (1/dim))`` cells per axis over the bounds (default: data box);
    hexagon and kmeans: ``avg_location_count = locations / cells``.
    """
    from jaxinfer.spt.tessellation import tessellate

    if cells < 1:
        raise ValueError(f"--cells must be >= 1, got {cells}")
    dim = 3 if "z" in df.columns else 2
    kwargs = dict(lower_bound=lower_bound, upper_bound=upper_bound)
    if min_location_count:
        kwargs["min_location_count"] = min_location_count
    if tessellation == "grid":
        per_dim = max(1, int(round(cells ** (1.0 / dim))))
        return tessellate(df, "grid", count_per_dim=[per_dim] * dim, **kwargs)
    avg = max(1, int(round(len(df) / float(cells))))
    if tessellation == "hexagon":
        return tessellate(df, "hexagon", avg_location_count=avg, rel_min_distance=None, **kwargs)
    if tessellation == "kmeans":
        return tessellate(df, "kmeans", avg_location_count=avg, rel_min_distance=None)
    raise ValueError(f"unknown tessellation {tessellation!r}; expected one of {TESSELLATIONS}")


def _progress_adapter(progress: Optional[Callable[[str], None]], label: str):
    """A callback for ``infer(progress=...)``: one line per iteration, at most 2 per second."""
    if progress is None:
        return None
    state = {"last": 0.0}

    def callback(intermediate_result):
        now = time.perf_counter()
        if now - state["last"] < 0.5:
            return
        state["last"] = now
        nit = getattr(intermediate_result, "nit", None)
        fun = getattr(intermediate_result, "fun", None)
        jac = getattr(intermediate_result, "jac", None)
        parts = [f"{label}: iteration {int(np.asarray(nit))}" if nit is not None else label]
        if fun is not None:
            parts.append(f"objective {float(np.asarray(fun)):.6g}")
        if jac is not None:
            g = np.concatenate([np.ravel(np.asarray(v)) for v in
                                (jac.values() if isinstance(jac, dict) else [jac])])
            parts.append(f"|gradient|_inf {float(np.max(np.abs(g))) if g.size else 0.0:.3g}")
        progress(", ".join(parts))

    return callback


def run_infer(partition, mode: str, *, progress=None, iterations: bool = False, **options):
    """Call :func:`jaxinfer.spt.infer.infer`; options that are None are not passed.

    ``progress(message)`` gets one final line with the result's own iteration count and
    objective; with ``iterations=True`` also a line at most every 0.5 s while a smooth mode
    iterates (the solve then carries a host callback, and JAX's persistent compilation cache
    does not keep such programs: it compiles again in every process). Returns the Maps.
    """
    from jaxinfer.spt.infer import infer

    options = {k: v for k, v in options.items() if v is not None}
    if progress is not None and iterations:
        options["progress"] = _progress_adapter(progress, mode)
    maps = infer(partition, mode, **options)
    result = maps.result
    if progress is not None and result is not None and np.ndim(result.nit) == 0:
        progress(f"{mode}: iteration {int(result.nit)} (final), objective "
                 f"{float(result.fun):.6g}")
    return maps


def _maps_table(maps, partition) -> pd.DataFrame:
    """The map table with cell index and centre columns first."""
    table = maps.maps if hasattr(maps, "maps") else maps
    table = table.copy()
    centers = np.asarray(partition.tessellation.centers)
    index = table.index.to_numpy()
    out = pd.DataFrame({"cell": index})
    for d, name in enumerate("xyz"[:centers.shape[1]]):
        out[f"center {name}"] = centers[index, d]
    if "n" not in table.columns:
        counts = np.bincount(partition.cell_index[partition.cell_index >= 0],
                             minlength=centers.shape[0])
        out["translocations"] = counts[index]
    return pd.concat([out, table.reset_index(drop=True)], axis=1)


def _result_summary(maps) -> dict:
    result = getattr(maps, "result", None)
    if result is None:
        return {"converged": None, "message": "closed form (no optimiser)"}
    summary = {}
    for name in ("success", "status", "nit", "nfev", "fun", "message"):
        value = getattr(result, name, None)
        if value is None:
            continue
        value = np.asarray(value)
        if value.dtype.kind in "fiub" and value.size == 1:
            value = value.item()
        elif value.dtype.kind in "fiub" or value.size > 1:
            value = value.tolist()
        else:
            value = str(value.reshape(-1)[0]) if value.size else ""
        summary[name] = value
    success = summary.get("success")
    summary["converged"] = bool(np.all(success)) if success is not None else None
    return summary


# --------------------------------------------------------------------------- infer command


def _positive_or_none(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def register(subparsers) -> None:
    """Add ``jaxinfer spt ...`` to the top-level parser's subparsers."""
    spt = subparsers.add_parser("spt", help="single-particle tracking maps (TRamWAy)",
                                description="Diffusivity / drift / force / potential maps "
                                            "from single-particle trajectories.")
    commands = spt.add_subparsers(dest="spt_command", required=True)
    p = commands.add_parser(
        "infer", help="infer maps from a trajectory file",
        description="Tessellate the trajectories and infer maps (TRamWAy's modes). Lengths "
                    "are in µm, times in s, diffusivities in µm²/s, potentials in kT.")
    p.add_argument("trajectories", help="text file: n x y [z] t per row (headerless, TRamWAy "
                                        "layout), or a CSV with a header (n, x, y[, z], t; or "
                                        "trackpy's particle, frame, x, y with "
                                        "--frame-interval)")
    p.add_argument("--frame-interval", type=_positive, default=None, metavar="SECONDS",
                   help="seconds per frame, for trackpy-style files (columns particle, frame; "
                        "default: none, times are the file's t column)")
    p.add_argument("--drop-invalid", action="store_true",
                   help="drop rows with missing, non-numeric or infinite values (counted) "
                        "instead of stopping")
    p.add_argument("--sort", action="store_true",
                   help="sort the points of each trajectory by time instead of requiring "
                        "increasing times")
    p.add_argument("--tessellation", choices=TESSELLATIONS, default="grid",
                   help="how space is cut into cells (default: grid)")
    p.add_argument("--cells", type=int, default=400,
                   help="approximate number of cells (default: 400)")
    p.add_argument("--lower-bound", type=float, nargs="+", default=None, metavar="µm",
                   help="lower corner of the box, one number per axis (default: the data's)")
    p.add_argument("--upper-bound", type=float, nargs="+", default=None, metavar="µm",
                   help="upper corner of the box, one number per axis (default: the data's)")
    p.add_argument("--min-location-count", type=int, default=None, metavar="N",
                   help="leave out cells with fewer than N locations (default: keep all)")
    p.add_argument("--mode", choices=cli_modes(), default="d", metavar="MODE",
                   help=_mode_help())
    p.add_argument("--sigma", type=_positive_or_none, default=None, metavar="µm",
                   help="localization error (default: 0.03, TRamWAy's)")
    p.add_argument("--diffusivity-prior", type=_positive_or_none, default=None,
                   metavar="WEIGHT", help="smoothing weight of D (default: none); "
                                          "docs/spt.md uses 100")
    p.add_argument("--potential-prior", type=_positive_or_none, default=None,
                   metavar="WEIGHT", help="smoothing weight of V (dv modes; default: none); "
                                          "docs/spt.md uses 10-30")
    p.add_argument("--drift-prior", type=_positive_or_none, default=None, metavar="WEIGHT",
                   help="ridge weight of the drift (dd; default: none)")
    p.add_argument("--force-prior", type=_positive_or_none, default=None, metavar="WEIGHT",
                   help="ridge weight of the force (df; default: none)")
    p.add_argument("--jeffreys-prior", action="store_true", help="add Jeffreys' prior on D")
    p.add_argument("--max-iter", type=int, default=None, metavar="N",
                   help="solver iterations at most (default: 1000 for the smooth modes, "
                        "TRamWAy's; 15000 per cell for d, dd, df without priors, scipy's)")
    p.add_argument("--float32", action="store_true",
                   help="compute in float32 (closed-form modes only: d.conj_prior, density; "
                        "the others need and use float64)")
    p.add_argument("--out", default=None, metavar="CSV", help="maps file (default: stdout)")
    p.add_argument("--plot", default=None, metavar="IMAGE",
                   help=f"image of the maps, PNG/PDF/SVG (needs matplotlib: {PLOT_INSTALL})")
    p.add_argument("--summary-json", default=None, metavar="JSON",
                   help="write a run summary (timings, convergence) here")
    p.add_argument("--progress", action="store_true",
                   help="also print the solver's iteration and objective every 0.5 s while a "
                        "smooth mode iterates (default: start and final lines only; a solve "
                        "with this callback is not kept in the persistent compilation cache, "
                        "so it compiles in every run)")
    p.add_argument("--quiet", action="store_true", help="nothing on stderr but errors and "
                                                        "warnings")
    p.set_defaults(handler=_infer_command)


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _cli_message(message: str) -> str:
    for python, option in _CLI_SPELLING.items():
        message = message.replace(python, option)
    return message


def _say(args, message: str) -> None:
    if not args.quiet:
        print(f"  .. {message}", file=sys.stderr, flush=True)


def _infer_command(args) -> int:
    import jax

    if not args.float32:
        jax.config.update("jax_enable_x64", True)
    from jaxinfer.spt.trajectories import load_trajectories

    def fail(message: str) -> int:
        print(f"jaxinfer spt infer: error: {_cli_message(message)}", file=sys.stderr,
              flush=True)
        return 2

    if args.plot and importlib.util.find_spec("matplotlib") is None:
        return fail(f"--plot needs matplotlib, which is not installed: {PLOT_INSTALL} "
                    "(or leave out --plot)")
    start = time.perf_counter()
    try:
        df = load_trajectories(args.trajectories, drop_invalid=args.drop_invalid,
                               sort=args.sort, frame_interval=args.frame_interval)
    except (OSError, ValueError, TypeError) as err:
        return fail(str(err))
    _say(args, f"loaded {len(df)} points in {df['n'].nunique()} trajectories from "
               f"{args.trajectories}")
    for name in ("lower_bound", "upper_bound"):
        value = getattr(args, name)
        dim = 3 if "z" in df.columns else 2
        if value is not None and len(value) != dim:
            return fail(f"--{name.replace('_', '-')} needs {dim} numbers, got {len(value)}")
    try:
        partition = partition_for(df, args.tessellation, args.cells,
                                  lower_bound=args.lower_bound, upper_bound=args.upper_bound,
                                  min_location_count=args.min_location_count)
    except ValueError as err:
        return fail(str(err))
    n_cells = partition.tessellation.number_of_cells
    assigned = partition.cell_index[partition.cell_index >= 0]
    n_tr, occupied = int(assigned.size), int(np.unique(assigned).size)
    _say(args, f"{args.tessellation} tessellation: {n_cells} cells ({occupied} holding "
               f"translocations), {n_tr} translocations")

    options = dict(sigma=args.sigma, diffusivity_prior=args.diffusivity_prior,
                   potential_prior=args.potential_prior, drift_prior=args.drift_prior,
                   force_prior=args.force_prior, max_iter=args.max_iter)
    if args.jeffreys_prior:
        options["jeffreys_prior"] = True
    _say(args, f"inferring mode {args.mode} ...")
    t0 = time.perf_counter()
    try:
        maps = run_infer(partition, args.mode, progress=None if args.quiet else
                         (lambda m: _say(args, m)), iterations=args.progress, **options)
    except (ValueError, TypeError) as err:
        return fail(str(err))
    elapsed = time.perf_counter() - t0
    summary = _result_summary(maps)
    table = _maps_table(maps, partition)
    _say(args, f"{args.mode}: {_summary_line(summary)} in {elapsed:.2f} s")
    if args.out:
        table.to_csv(args.out, index=False)
        _say(args, f"maps written to {args.out} ({len(table)} cells)")
    else:
        table.to_csv(sys.stdout, index=False)
    if args.plot:
        from jaxinfer.spt.plot import save_maps, tessellation_polygons

        centers = table[[c for c in table.columns if c.startswith("center ")]].to_numpy()
        if centers.shape[1] != 2:
            _say(args, "--plot supports 2D maps only; skipped")
        else:
            features = table.drop(columns=[c for c in table.columns if c.startswith("center ")]
                                  + ["cell", "translocations"], errors="ignore")
            bounds = None
            if args.lower_bound is not None and args.upper_bound is not None:
                bounds = (*args.lower_bound[:2], *args.upper_bound[:2])
            # every cell drawn as itself (squares, hexagons, Voronoi cells among all the
            # tessellation's centres); empty cells blank
            polygons, bounds = tessellation_polygons(partition.tessellation, table["cell"],
                                                     bounds)
            save_maps(args.plot, features, centers, bounds=bounds, polygons=polygons)
            _say(args, f"plot written to {args.plot}")
    if args.summary_json:
        record = dict(file=args.trajectories, mode=args.mode, tessellation=args.tessellation,
                      cells=n_cells, translocations=n_tr, seconds=elapsed,
                      total_seconds=time.perf_counter() - start, **summary)
        with open(args.summary_json, "w") as fd:
            json.dump(record, fd, indent=2, default=str)
    if summary.get("converged") is False:
        print(f"jaxinfer spt infer: warning: the solver did not converge, the maps are its "
              f"last iterate: {_summary_line(summary)}; try a larger --max-iter or stronger "
              f"priors", file=sys.stderr, flush=True)
    return 0


def _summary_line(summary: dict) -> str:
    """One line for a whole run: converged or not, iterations (per-cell modes: the cells'
    range) and the solver's message (per-cell modes: counts per message)."""
    state = {True: "converged", False: "NOT converged", None: "done"}[summary.get("converged")]
    nit = summary.get("nit")
    if isinstance(nit, list):
        success = np.asarray(summary.get("success", []), dtype=bool)
        state = (f"{int(success.sum())} of {success.size} cells converged"
                 if success.size else state)
        text = f"{state}, {min(nit)}-{max(nit)} iterations per cell" if nit else state
    else:
        text = state + (f" after {nit} iterations" if nit is not None else "")
    message = summary.get("message")
    if isinstance(message, list):
        values, counts = np.unique(np.asarray(message, dtype=str), return_counts=True)
        message = "; ".join(f"{c} cells: {v}" for v, c in zip(values, counts))
    return text + (f" ({message})" if message else "")


# --------------------------------------------------------------------------- demo


DEMO_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "spt_demo.txt")
DEMO_CELLS_PER_DIM = 10
DEMO_OPTIONS = dict(sigma=0.02, diffusivity_prior=100.0, potential_prior=30.0)


def demo_maps(progress: Optional[Callable[[str], None]] = None, mode: str = "dv"):
    """Infer the demo maps; returns ``(maps, partition, truth, seconds)``."""
    from jaxinfer.spt.simulate import demo_fields, truth_at
    from jaxinfer.spt.tessellation import tessellate
    from jaxinfer.spt.trajectories import load_trajectories

    df = load_trajectories(DEMO_FILE)
    partition = tessellate(df, "grid", count_per_dim=[DEMO_CELLS_PER_DIM] * 2,
                           lower_bound=np.array([-1.0, -1.0]), upper_bound=np.array([1.0, 1.0]))
    start = time.perf_counter()
    maps = run_infer(partition, mode, progress=progress, **DEMO_OPTIONS)
    seconds = time.perf_counter() - start
    table = maps.maps if hasattr(maps, "maps") else maps
    centers = np.asarray(partition.tessellation.centers)[table.index.to_numpy()]
    truth = truth_at(centers, *demo_fields())
    return maps, partition, truth, seconds


def demo(progress: Callable[[str], None]) -> str:
    """``jaxinfer demo`` part: DV map of the embedded simulated trajectories vs the truth."""
    from jaxinfer.spt.simulate import map_errors

    progress(f"spt: loading {os.path.basename(DEMO_FILE)} and tessellating "
             f"({DEMO_CELLS_PER_DIM}x{DEMO_CELLS_PER_DIM} grid)")
    maps, partition, truth, seconds = demo_maps(progress, "dv")
    table = maps.maps if hasattr(maps, "maps") else maps
    n_tr = int(np.sum(partition.cell_index >= 0))
    errors = map_errors(table, truth)
    summary = _result_summary(maps)
    state = {True: "converged", False: "NOT converged", None: "done"}[summary.get("converged")]
    d_true = truth["diffusivity"].to_numpy()
    lines = [
        f"DV map of simulated trajectories (known D = 0.2 + 0.1 x µm²/s, Gaussian well "
        f"of 2 kT): {len(table)} cells, {n_tr} translocations",
        f"inference: {seconds:.2f} s, {state}"
        + (f" after {summary['nit']} iterations" if "nit" in summary else "")
        + (f" ({summary['message']})" if summary.get("message") else ""),
        f"RMSE vs truth: diffusivity {errors.get('diffusivity', float('nan')):.4f} µm²/s "
        f"({100 * errors.get('diffusivity', float('nan')) / float(np.mean(d_true)):.1f}% of mean D), "
        f"potential {errors.get('potential', float('nan')):.3f} kT, "
        f"force {errors.get('force', float('nan')):.3f} kT/µm",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m jaxinfer.spt.cli infer ...`` (same as ``jaxinfer spt infer ...``)."""
    parser = argparse.ArgumentParser(prog="jaxinfer")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    args = parser.parse_args(["spt"] + list(sys.argv[1:] if argv is None else argv))
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
