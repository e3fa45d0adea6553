"""``jaxinfer mixture fit|sample ...`` and the mixture part of ``jaxinfer demo``.

    jaxinfer mixture fit patients.csv --components 2 --split-by subsite --out fit.json
    jaxinfer mixture sample patients.csv --fit fit.json --steps 500 --checkpoint chain.ckpt \
        --out chain.npz [--continue]

The CSV is a LyProX / lyDATA table (three header rows). The network is a chain: the tumour
spreads to every level of ``--lnls`` and each level to the next; the time priors are
Binom(10, 0.3) for early and a binomial with a fitted ``late_p`` for late T-stages.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Callable

import numpy as np

DEFAULT_MODALITIES = {"CT": (0.76, 0.81), "MRI": (0.63, 0.81), "PET": (0.86, 0.79),
                      "FNA": (0.98, 0.80), "pathology": (1.0, 1.0)}


def chain_graph(lnls):
    graph = {("tumor", "T"): list(lnls)}
    for a, b in zip(lnls, list(lnls[1:]) + [None]):
        graph[("lnl", a)] = [] if b is None else [b]
    return graph


def _split_column(table, name: str):
    if "," in name:
        col = tuple(name.split(","))
        if len(col) != 3:
            raise SystemExit(f"--split-by {name!r}: give a column name or three comma-separated levels")
        return col
    matches = [c for c in table.columns if c[0] in ("tumor", "patient") and c[2] == name]
    if not matches:
        raise SystemExit(f"--split-by {name!r}: no ('tumor'|'patient', ..., {name!r}) column")
    return matches[0]


def _parse_modalities(items, table):
    from jaxinfer.mixture._data import data_modalities

    found = data_modalities(table)
    if not items:
        chosen = {m: DEFAULT_MODALITIES[m] for m in found if m in DEFAULT_MODALITIES}
        if not chosen:
            raise SystemExit(f"no known modality in the data ({found}); give --modality NAME:SPEC:SENS")
        return chosen
    out = {}
    for item in items:
        try:
            name, spec, sens = item.split(":")
            out[name] = (float(spec), float(sens))
        except ValueError:
            raise SystemExit(f"--modality {item!r}: expected NAME:SPEC:SENS, e.g. CT:0.76:0.81")
    return out


def build_mixture(table, lnls, components: int, split_by, modalities, seed: int = 0):
    """A LymphMixture on ``table`` with a chain graph and random U(0.05, 0.95) parameters."""
    from jaxinfer.mixture import LymphMixture, utils

    mixture = LymphMixture(model_kwargs={"graph_dict": chain_graph(lnls)},
                           num_components=components)
    mixture.set_distribution("early", np.asarray(utils.binom_pmf(np.arange(11), 10, 0.3)))
    mixture.set_distribution("late", utils.late_binomial)
    mixture.load_patient_data(table, split_by=split_by)
    for name, (spec, sens) in modalities.items():
        mixture.set_modality(name, spec, sens)
    rng = np.random.default_rng(seed)
    mixture.set_params(*rng.uniform(0.05, 0.95, len(mixture.get_params())).tolist())
    return mixture


def _bar(label: str):
    def show(done, total, extra=""):
        width = 30
        filled = int(width * done / max(total, 1))
        print(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {extra}",
              end="", file=sys.stderr, flush=True)
    return show


def _load(args):
    import jax
    import pandas as pd

    jax.config.update("jax_enable_x64", True)
    table = pd.read_csv(args.patients, header=[0, 1, 2])
    lnls = args.lnls.split(",")
    split_by = _split_column(table, args.split_by)
    modalities = _parse_modalities(args.modality, table)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixture = build_mixture(table, lnls, args.components, split_by, modalities, args.seed)
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    return mixture


def _fit(args) -> int:
    from jaxinfer.mixture import em

    mixture = _load(args)
    bar = _bar("EM")
    result = em.fit(mixture, maxiter=args.maxiter, atol=args.atol, rtol=args.rtol,
                    callback=lambda p: bar(int(p.nit), args.maxiter, f"loglik {float(p.fun):.4f}"))
    print(file=sys.stderr)
    history = np.asarray(result.extra["history"])[: int(result.nit) + 1]
    out = {"success": bool(result.success), "message": str(result.message),
           "nit": int(result.nit), "loglik": float(result.extra["loglik"]),
           "params": mixture.get_params(), "history": history.tolist(),
           "coefs": mixture.get_mixture_coefs().to_dict()}
    text = json.dumps(out, indent=1, default=str)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(f"{out['message']} {out['nit']} EM steps, log-likelihood {out['loglik']:.4f}")
    return 0 if out["success"] else 1


def _sample(args) -> int:
    from jaxinfer.mixture import em, sampling

    mixture = _load(args)
    if args.fit:
        with open(args.fit) as f:
            mixture.set_params(**json.load(f)["params"])
    mixture.set_resps(em.expectation(mixture))
    bar = _bar("NUTS")
    idata, chain = sampling.sample_fixed_mixture(
        mixture, steps=args.steps, num_warmup=args.warmup, filename=args.checkpoint,
        continue_sampling=args.resume, seed=args.seed, checkpoint_every=args.checkpoint_every,
        progress=lambda p: bar(p.done, p.total))
    print(file=sys.stderr)
    import arviz as az
    print(az.summary(idata, kind="stats").to_string())
    if args.out:
        np.savez(args.out, chain=chain, names=np.array(list(idata.posterior.data_vars)))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("mixture", help="mixtures of lymphatic-spread models (lymixture)")
    sub = parser.add_subparsers(dest="mixture_command", required=True)
    for name, handler, help_ in (("fit", _fit, "EM fit of a mixture"),
                                 ("sample", _sample, "NUTS over the components' parameters")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("patients", help="LyProX / lyDATA CSV (three header rows)")
        p.add_argument("--components", type=int, default=2)
        p.add_argument("--split-by", default="subsite",
                       help="subgroup column: a field name under 'tumor' or three levels a,b,c")
        p.add_argument("--lnls", default="I,II,III,IV", help="levels, in chain order")
        p.add_argument("--modality", action="append", help="NAME:SPEC:SENS (repeatable)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", help="output file")
        if name == "fit":
            p.add_argument("--maxiter", type=int, default=200)
            p.add_argument("--atol", type=float, default=1e-3)
            p.add_argument("--rtol", type=float, default=0.0)
        else:
            p.add_argument("--fit", help="fit.json from 'jaxinfer mixture fit' (start point)")
            p.add_argument("--steps", type=int, default=500)
            p.add_argument("--warmup", type=int, default=500)
            p.add_argument("--checkpoint", default="chain_fixed_mix.ckpt")
            p.add_argument("--checkpoint-every", type=int, default=100)
            p.add_argument("--continue", dest="resume", action="store_true",
                           help="resume from --checkpoint")
        p.set_defaults(handler=handler)


def demo(progress: Callable[[str], None]) -> str:
    """EM on the vendored USZ oropharynx cohort (lyDATA), two components over tumour
    subsites (ICD-10 C01 base of tongue, C09 tonsil, C10 other oropharynx)."""
    import importlib.resources as resources

    import pandas as pd

    from jaxinfer.mixture import em

    path = resources.files("jaxinfer") / "data" / "lydata" / "2021-usz-oropharynx" / "data.csv"
    table = pd.read_csv(path, header=[0, 1, 2])
    col = ("tumor", "1", "subsite")
    table[col] = table[col].astype(str).str[:3]
    progress(f"{len(table)} patients, subsites {sorted(table[col].unique())}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mixture = build_mixture(table, ["I", "II", "III", "IV"], 2, col,
                                {"CT": DEFAULT_MODALITIES["CT"], "PET": DEFAULT_MODALITIES["PET"],
                                 "MRI": DEFAULT_MODALITIES["MRI"]}, seed=1)
    progress("EM (compiles once, then runs in one loop)")
    result = em.fit(mixture, maxiter=200)
    coefs = mixture.get_mixture_coefs()
    lines = [f"EM: {result.message} {int(result.nit)} steps, log-likelihood "
             f"{float(result.extra['loglik']):.3f}",
             "mixture coefficients (component x subsite):",
             coefs.round(3).to_string()]
    risk = mixture.risk("C09", {"III": True}, given_diagnosis={"CT": {"II": True, "III": False}},
                        t_stage="early")
    lines.append(f"risk of level III involvement, tonsil (C09), early T, CT: II+ III-: {risk:.3f}")
    return "\n".join(lines)


__all__ = ["register", "demo", "build_mixture", "chain_graph"]
