"""``jaxinfer glmm scan --bfile`` against FaST-LMM's ``single_snp`` on the same PLINK file, in one run.

    python benchmarks/glmm/bench_fastlmm.py [--n 5000] [--snps 100000] [--threads 1]
        [--fastlmm-python /tmp/H5/fastlmm-venv/bin/python] [--max-mem 512M] [--out JSON]

Data: genotypes simulated here (minor-allele frequencies uniform on [0.05, 0.5], 10 causal
SNPs, a polygenic background from 2,000 SNPs, h² = 0.5, 22 chromosomes of equal SNP count),
written with bed-reader; the GRM ``K = ZZᵀ/p`` of all SNPs is computed once (jaxinfer's
``grm_from_plink``) and given to both sides, so both fit the same model: ML null fit
``y ~ N(1β, v₀K + v₁I)``, then one likelihood-ratio test per SNP with ``v₀, v₁`` frozen
(FaST-LMM: ``leave_out_one_chrom=False``); the null is fitted by REML on both sides
(FaST-LMM's ``findH2`` default; ours ``--restricted``). FaST-LMM tests each SNP by a Wald
F(1, n − 2) test, jaxinfer by the LRT: both p-values of ours are compared (the Wald one from
our effect size and standard error). FaST-LMM runs in its own virtual environment
(``pip install fastlmm``; PySnpTools needs ``six`` too); jaxinfer runs its CLI. Each side is a
subprocess whose wall time (eigendecomposition of K + null fit + scan + writing the table)
CPU seconds (user + system of the process tree: fair under the shared machine's load) and
peak resident memory are measured; both are pinned to ``--threads`` BLAS / XLA / bed-reader
threads (OMP / OPENBLAS / MKL_NUM_THREADS, XLA_FLAGS); jaxinfer reads the next SNP block in
one background thread while it scans the current one (that thread is mostly idle: reading
int8 genotypes is ~5% of the scan's CPU time).

``--throughput-only``: our scan alone (no FaST-LMM) on ``--n`` samples × ``--snps`` SNPs with
the GRM from the first ``--grm-snps`` SNPs written as a second PLINK file (``--grm-bfile``):
low rank when that is below ``--n`` (the thin SVD of the n × p standardised SNPs); SNPs/s of
the whole command and of the scan phase.
Agreement: p-values (max abs difference of -log10 p, and relative on p > 1e-300), the null
heritability, the top hits. Results go to ``benchmarks/results/glmm_fastlmm.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
_LOAD_AT_START = None
ROOT = os.path.dirname(os.path.dirname(HERE))

# Runs a command and prints its wall time, CPU time (user + system) and the peak RSS of its
# process tree (KiB).
_SHIM = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
         "rc = subprocess.call(sys.argv[1:]); wall = time.perf_counter() - t; "
         "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
         "print(json.dumps({'rc': rc, 'wall': wall, 'cpu': u.ru_utime + u.ru_stime, "
         "'maxrss_kib': u.ru_maxrss}))")

_FASTLMM_SCRIPT = """
import sys, numpy as np, pandas as pd
from pysnptools.snpreader import Bed, SnpData
from pysnptools.kernelreader import KernelData
from fastlmm.association import single_snp
prefix, pheno_path, kin_path, out = sys.argv[1:5]
bed = Bed(prefix, count_A1=True)
y = np.loadtxt(pheno_path)
iid = bed.iid
pheno = SnpData(iid=iid, sid=["y"], val=y[:, None])
K = KernelData(iid=iid, val=np.load(kin_path))
res = single_snp(bed, pheno, K0=K, leave_out_one_chrom=False, count_A1=True)
res[["SNP", "PValue", "SnpWeight", "Nullh2"]].to_csv(out, index=False)
"""


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--snps", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fastlmm-python", default="/tmp/H5/fastlmm-venv/bin/python")
    p.add_argument("--max-mem", default="512M")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--throughput-only", action="store_true",
                   help="only our scan (no FaST-LMM), the GRM from the first --grm-snps SNPs "
                        "written to a second PLINK file (--grm-bfile): low rank when < --n")
    p.add_argument("--grm-snps", type=int, default=2000)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "glmm_fastlmm.json"))
    return p.parse_args(argv)


def simulate(root, n, m, seed, grm_snps=0):
    """Write ``root/sim.{bed,bim,fam}`` and ``root/y.csv`` (and, ``grm_snps`` > 0,
    ``root/sim_grm.*`` holding the first ``grm_snps`` SNPs); returns (prefix, y, causal)."""
    import bed_reader

    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.05, 0.5, m)
    G = np.empty((n, m), np.int8)
    for a in range(0, m, 5000):  # in chunks: the int64 draws of all SNPs would be 8·n·m bytes
        G[:, a:a + 5000] = rng.binomial(2, freq[a:a + 5000], size=(n, min(5000, m - a)))
    z = (G[:, :2000] - 2 * freq[:2000]) / np.sqrt(2 * freq[:2000] * (1 - freq[:2000]))
    causal = rng.choice(m, 10, replace=False)
    zc = (G[:, causal] - 2 * freq[causal]) / np.sqrt(2 * freq[causal] * (1 - freq[causal]))
    genetic = z @ rng.normal(0, np.sqrt(0.4 / 2000), 2000) + zc @ rng.normal(0, np.sqrt(0.1 / 10), 10)
    y = genetic + rng.normal(0, np.sqrt(0.5), n)
    iid = np.array([f"s{i}" for i in range(n)])
    chrom = np.repeat(np.arange(1, 23), -(-m // 22))[:m].astype(str)
    prefix = os.path.join(root, "sim")
    bed_reader.to_bed(prefix + ".bed", G, properties={
        "iid": iid, "fid": iid, "sid": [f"rs{j}" for j in range(m)], "chromosome": chrom,
        "bp_position": 1 + np.arange(m) * 1000})
    if grm_snps:
        first = np.ascontiguousarray(G[:, :grm_snps])
        bed_reader.to_bed(prefix + "_grm.bed", first, properties={
            "iid": iid, "fid": iid, "sid": [f"rs{j}" for j in range(grm_snps)],
            "chromosome": chrom[:grm_snps], "bp_position": 1 + np.arange(grm_snps) * 1000})
    del G
    import pandas as pd

    pd.DataFrame({"iid": iid, "y": y}).to_csv(os.path.join(root, "y.csv"), index=False)
    np.savetxt(os.path.join(root, "y.txt"), y)
    return prefix, y, causal


def _measured(cmd, env):
    out = subprocess.run([sys.executable, "-c", _SHIM, *cmd], env=env, capture_output=True,
                         text=True)
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        raise RuntimeError(f"{cmd[0]} failed: {out.stderr[-2000:]}")
    info = json.loads(lines[-1])
    if info["rc"]:
        raise RuntimeError(f"{' '.join(cmd[:3])} exited {info['rc']}: {out.stderr[-2000:]}")
    return info, out.stderr


def _jaxinfer_cli():
    return os.path.join(os.path.dirname(sys.executable), "jaxinfer")


def _scan_seconds(stderr):
    """The scan's own wall seconds, from the CLI's line 'scan: M candidates in S s'."""
    for line in stderr.splitlines():
        if line.strip().startswith("scan: ") and " candidates in " in line:
            return float(line.split(" candidates in ")[1].split(" s")[0])
    return None


def throughput(args, env) -> int:
    """Our streamed scan alone: SNPs/s of the whole command and of its scan phase."""
    with tempfile.TemporaryDirectory(prefix="bench_scan_") as root:
        t = time.perf_counter()
        prefix, _, _ = simulate(root, args.n, args.snps, args.seed, grm_snps=args.grm_snps)
        t_sim = time.perf_counter() - t
        ours, err = _measured([_jaxinfer_cli(), "glmm", "scan", "--pheno",
                               os.path.join(root, "y.csv"), "--bfile", prefix, "--grm-bfile",
                               prefix + "_grm", "--max-mem", args.max_mem, "--restricted",
                               "--out", os.path.join(root, "ours.csv")], env)
    scan_s = _scan_seconds(err)
    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_start": _LOAD_AT_START,
                    "load_average_at_end": os.getloadavg()},
        "threads": args.threads, "n": args.n, "snps": args.snps, "max_mem": args.max_mem,
        "grm": f"GRM of the first {args.grm_snps} SNPs (a second PLINK file, --grm-bfile)"
               + (": rank <= that, thin SVD, low-rank scan" if args.grm_snps < args.n else ""),
        "simulate_and_write_bed_seconds": t_sim,
        "jaxinfer": {"wall_seconds": ours["wall"], "cpu_seconds": ours["cpu"],
                     "peak_rss_mib": ours["maxrss_kib"] / 1024,
                     "scan_phase_wall_seconds": scan_s,
                     "snps_per_second_whole_command": args.snps / ours["wall"],
                     "snps_per_second_scan_phase": args.snps / scan_s if scan_s else None,
                     "snps_per_cpu_second_whole_command": args.snps / ours["cpu"]},
    }
    # added to the comparison's JSON (when there is one) under "throughput_n{n}"
    whole = {}
    if os.path.exists(args.out):
        with open(args.out) as fh:
            whole = json.load(fh)
    whole[f"throughput_n{args.n}"] = result
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(whole, fh, indent=1)
    print(json.dumps(result, indent=1))
    return 0


def main(argv=None) -> int:
    args = _parse(argv)
    global _LOAD_AT_START
    _LOAD_AT_START = os.getloadavg()
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    env["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
                        if args.threads == 1 else f"intra_op_parallelism_threads={args.threads}")
    env["JAX_PLATFORMS"] = "cpu"
    import pandas as pd

    from jaxinfer.glmm.plink import grm_from_plink, open_plink, parse_memory

    if args.throughput_only:
        return throughput(args, env)
    with tempfile.TemporaryDirectory(prefix="bench_fastlmm_") as root:
        t = time.perf_counter()
        prefix, y, causal = simulate(root, args.n, args.snps, args.seed)
        t_sim = time.perf_counter() - t
        t = time.perf_counter()
        K = grm_from_plink(open_plink(prefix), max_memory=parse_memory(args.max_mem))
        t_grm = time.perf_counter() - t
        kin = os.path.join(root, "K.npy")
        np.save(kin, K)

        script = os.path.join(root, "fastlmm_side.py")
        with open(script, "w") as fh:
            fh.write(_FASTLMM_SCRIPT)
        theirs, _ = _measured([args.fastlmm_python, script, prefix, os.path.join(root, "y.txt"),
                               kin, os.path.join(root, "fastlmm.csv")], env)
        ours, err = _measured([_jaxinfer_cli(), "glmm", "scan", "--pheno", os.path.join(root, "y.csv"),
                               "--bfile", prefix, "--kinship", kin, "--max-mem", args.max_mem,
                               "--restricted",
                               "--out", os.path.join(root, "ours.csv")], env)
        a = pd.read_csv(os.path.join(root, "ours.csv"))
        b = pd.read_csv(os.path.join(root, "fastlmm.csv")).set_index("SNP").loc[a["snp"]]
    from scipy import stats

    pb = b["PValue"].to_numpy(float)
    # FaST-LMM's test: Wald F(1, n - 2) on beta^2 / var(beta); ours: the LRT. Both are
    # compared; the Wald p-value from our effect size and its standard error is the like test.
    wald = (a["effect_size"].to_numpy(float) / a["effect_size_se"].to_numpy(float)) ** 2
    p_wald = stats.f.sf(wald, 1, args.n - 2)

    def agreement(pa):
        la, lb = -np.log10(np.maximum(pa, 1e-300)), -np.log10(np.maximum(pb, 1e-300))
        rel = np.abs(pa - pb) / np.maximum(pb, 1e-300)
        return {"max_abs_diff_neg_log10_p": float(np.max(np.abs(la - lb))),
                "max_rel_diff_p": float(np.max(rel)), "median_rel_diff_p": float(np.median(rel)),
                "top10_same": top(pa) == top(pb)}

    top = lambda p: set(np.argsort(p)[:10].tolist())  # noqa: E731
    h2_ours = float(err.split("heritability ")[1].split(",")[0]) if "heritability " in err else None
    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average_at_start": _LOAD_AT_START,
                    "load_average_at_end": os.getloadavg()},
        "threads": args.threads, "n": args.n, "snps": args.snps, "max_mem": args.max_mem,
        "setup_seconds": {"simulate_and_write_bed": t_sim, "grm_shared": t_grm},
        "fastlmm": {"version": subprocess.run([args.fastlmm_python, "-c",
                                               "import importlib.metadata as m; print(m.version('fastlmm'))"],
                                              capture_output=True, text=True).stdout.strip(),
                    "wall_seconds": theirs["wall"], "cpu_seconds": theirs["cpu"],
                    "peak_rss_mib": theirs["maxrss_kib"] / 1024,
                    "null_h2": float(b["Nullh2"].iloc[0])},
        "jaxinfer": {"wall_seconds": ours["wall"], "cpu_seconds": ours["cpu"],
                     "peak_rss_mib": ours["maxrss_kib"] / 1024,
                     "scan_phase_wall_seconds": _scan_seconds(err),
                     "snps_per_second": args.snps / ours["wall"],
                     "snps_per_cpu_second": args.snps / ours["cpu"], "null_h2_printed": h2_ours},
        "speedup_fastlmm_over_jaxinfer": theirs["wall"] / ours["wall"],
        "cpu_ratio_fastlmm_over_jaxinfer": theirs["cpu"] / ours["cpu"],
        "agreement_wald_f": agreement(p_wald),
        "agreement_lrt": agreement(a["pvalue"].to_numpy(float)),
        "causal_in_top10": {"jaxinfer": int(len(top(a["pvalue"].to_numpy(float)) & set(causal.tolist()))),
                            "fastlmm": int(len(top(pb) & set(causal.tolist())))},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
