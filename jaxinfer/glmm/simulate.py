"""Simulated cohorts for mixed models: genotypes, relatedness, phenotypes.

Simulation lives at the edge of the package (like reading files), so it is plain NumPy: every
function takes an explicit ``seed`` (an ``int``, a :class:`numpy.random.Generator`, or a
:func:`jax.random.key`, whose key data seeds a Generator) and returns NumPy arrays
(``float64``; genotypes ``int8``). Nothing touches a global random state, and the same seed
always gives the same cohort. Hand the arrays to ``jnp.asarray`` with the dtype you want.

The generative model, from the bottom up:

* **Allele frequencies.** Ancestral minor-allele frequencies ``f_j ~ U(maf_range)``. With
  ``n_populations > 1`` each population draws its own frequencies from the Balding–Nichols model,
  ``f_kj ~ Beta(f_j (1-F)/F, (1-f_j)(1-F)/F)``, whose expected fixation index is ``F = fst``.
* **Genotypes.** Individuals come in families of ``family_size`` full siblings. Each family has
  two unobserved parents whose four haplotypes are Bernoulli(``f``) draws (Hardy–Weinberg); each
  child inherits, independently at every SNP (unlinked loci), one of the two haplotypes of each
  parent. Genotypes count minor alleles, 0/1/2. ``family_size=1`` gives unrelated individuals
  (one child of random parents is a Hardy–Weinberg draw); full siblings have relatedness 1/2.
* **Standardisation and GRM.** ``Z = (G - 2f̂)/sqrt(2f̂(1-f̂))`` with in-sample frequencies
  ``f̂``; the genetic relatedness matrix is ``K = Z Zᵀ / p`` (mean diagonal ≈ 1).
* **Phenotypes.** ``y = X β + Z[:, causal] b + u + e`` with polygenic background
  ``u = Z w / sqrt(p)``, ``w ~ N(0, σ²_poly)`` (so ``u ~ N(0, σ²_poly K)``), causal effects
  ``b_j ~ N(0, σ²_causal / n_causal)`` and noise ``e ~ N(0, σ²_e)``, where
  ``σ²_causal + σ²_poly = h²·scale`` (split by ``causal_fraction``) and ``σ²_e = (1-h²)·scale``.
  These are expected variances: realised ones scatter around them, as in a real cohort.
  In glimix-core's parametrisation ``y ~ N(Xβ, s((1-δ)K + δI))`` this is ``δ ≈ 1 - h²``.
* **GLMM phenotypes.** The same latent ``z`` (fixed + genetic + noise) goes through a link:
  Bernoulli / binomial with the logit link (``p = sigmoid(z)``) or Poisson with the log link
  (``λ = exp(z)``), as in glimix-core's ``GLMMExpFam``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "Genotypes",
    "Phenotype",
    "CountPhenotype",
    "Cohort",
    "as_generator",
    "simulate_genotypes",
    "standardize_genotypes",
    "genetic_relatedness_matrix",
    "simulate_covariates",
    "simulate_phenotype",
    "simulate_glmm_phenotype",
    "simulate_cohort",
]

LIKELIHOODS = ("bernoulli", "binomial", "poisson")


def as_generator(seed) -> np.random.Generator:
    """A :class:`numpy.random.Generator` from an ``int`` seed, a Generator (returned as is) or a
    :func:`jax.random.key` / raw ``uint32`` key array (its key data seeds the Generator)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError("seed: expected an int, a numpy Generator or a jax.random key, got a bool")
    if isinstance(seed, (int, np.integer)):
        return np.random.default_rng(int(seed))
    try:
        import jax

        if isinstance(seed, jax.Array):
            data = jax.random.key_data(seed) if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key) else seed
            data = np.asarray(data)
            if data.dtype == np.uint32:
                return np.random.default_rng([int(v) for v in data.ravel()])
    except ImportError:  # pragma: no cover - jax is a hard dependency of the package
        pass
    raise TypeError(
        f"seed: expected an int, a numpy Generator or a jax.random key, got {type(seed).__name__}"
    )


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


class Genotypes(NamedTuple):
    """Simulated genotypes.

    Attributes:
        genotypes: ``(n_individuals, n_snps)`` int8, minor-allele counts 0/1/2.
        frequencies: ``(n_populations, n_snps)`` allele frequencies each population was drawn
            from (a single row without population structure).
        ancestral_frequencies: ``(n_snps,)`` ancestral minor-allele frequencies.
        population: ``(n_individuals,)`` int, population label of each individual.
        family: ``(n_individuals,)`` int, family label (siblings share one).
    """

    genotypes: np.ndarray
    frequencies: np.ndarray
    ancestral_frequencies: np.ndarray
    population: np.ndarray
    family: np.ndarray


class Phenotype(NamedTuple):
    """A simulated quantitative trait and its components (all ``(n,)`` unless noted).

    Attributes:
        y: the phenotype, ``fixed + causal_part + polygenic + noise``.
        fixed: covariate contribution ``X β``.
        causal_part: contribution of the causal SNPs ``Z[:, causal] b``.
        polygenic: polygenic background ``u ~ N(0, σ²_poly K)``.
        noise: environmental noise ``e``.
        causal: ``(n_causal,)`` int, column indices of the causal SNPs (sorted).
        causal_effects: ``(n_causal,)`` effects ``b`` per standardised causal SNP.
        covariates: ``(n, c)`` covariates ``X`` (first column the intercept when present).
        covariate_effects: ``(c,)`` the ``β`` used.
        heritability: the requested ``h²``.
    """

    y: np.ndarray
    fixed: np.ndarray
    causal_part: np.ndarray
    polygenic: np.ndarray
    noise: np.ndarray
    causal: np.ndarray
    causal_effects: np.ndarray
    covariates: np.ndarray
    covariate_effects: np.ndarray
    heritability: float


class CountPhenotype(NamedTuple):
    """A simulated non-Normal trait for a GLMM.

    Attributes:
        y: ``(n,)`` outcomes: 0/1 (Bernoulli), successes (binomial) or counts (Poisson).
        ntrials: ``(n,)`` number of trials (ones for Bernoulli, ``None`` for Poisson).
        likelihood: ``"bernoulli"``, ``"binomial"`` or ``"poisson"``.
        latent: the underlying :class:`Phenotype`; ``latent.y`` is the linear predictor ``z``.
    """

    y: np.ndarray
    ntrials: np.ndarray | None
    likelihood: str
    latent: Phenotype


class Cohort(NamedTuple):
    """Genotypes, their standardisation, the GRM and a phenotype in one bundle.

    Attributes:
        genotypes: :class:`Genotypes`.
        standardized: ``(n, p)`` standardised genotypes ``Z``.
        kinship: ``(n, n)`` GRM ``K = Z Zᵀ / p``.
        phenotype: :class:`Phenotype` or :class:`CountPhenotype`.
    """

    genotypes: Genotypes
    standardized: np.ndarray
    kinship: np.ndarray
    phenotype: Phenotype | CountPhenotype


def simulate_genotypes(
    seed,
    n_individuals: int,
    n_snps: int,
    *,
    maf_range: tuple[float, float] = (0.05, 0.5),
    n_populations: int = 1,
    fst: float = 0.0,
    family_size: int = 1,
) -> Genotypes:
    """Simulate minor-allele counts for ``n_individuals`` at ``n_snps`` unlinked SNPs.

    Args:
        seed: ``int``, :class:`numpy.random.Generator` or :func:`jax.random.key`.
        n_individuals: number of individuals ``n``; a multiple of ``family_size``.
        n_snps: number of SNPs ``p``.
        maf_range: ``(low, high)`` of the uniform ancestral minor-allele frequencies,
            ``0 < low <= high <= 0.5``.
        n_populations: number of sub-populations (whole families, split as evenly as possible).
        fst: Balding–Nichols fixation index ``F`` in ``[0, 1)``; 0 means no structure.
        family_size: full siblings per family (1 = unrelated individuals).

    Returns:
        :class:`Genotypes`.
    """
    n_individuals = _positive_int(n_individuals, "n_individuals")
    n_snps = _positive_int(n_snps, "n_snps")
    n_populations = _positive_int(n_populations, "n_populations")
    family_size = _positive_int(family_size, "family_size")
    if n_individuals % family_size:
        raise ValueError(
            f"n_individuals: expected a multiple of family_size={family_size}, got {n_individuals}"
        )
    n_families = n_individuals // family_size
    if n_populations > n_families:
        raise ValueError(f"n_populations: expected at most {n_families} (the number of families), got {n_populations}")
    fst = float(fst)
    if not 0.0 <= fst < 1.0:
        raise ValueError(f"fst: expected 0 <= fst < 1, got {fst}")
    lo, hi = (float(v) for v in maf_range)
    if not 0.0 < lo <= hi <= 0.5:
        raise ValueError(f"maf_range: expected 0 < low <= high <= 0.5, got {tuple(maf_range)!r}")

    rng = as_generator(seed)
    ancestral = rng.uniform(lo, hi, n_snps)
    if fst > 0.0:
        shape = (1.0 - fst) / fst
        frequencies = rng.beta(ancestral * shape, (1.0 - ancestral) * shape, (n_populations, n_snps))
    else:
        frequencies = np.broadcast_to(ancestral, (n_populations, n_snps)).copy()

    family_population = np.arange(n_families) * n_populations // n_families
    family_freq = frequencies[family_population]  # (n_families, p)
    # Parents' haplotypes (n_families, 2 parents, 2 haplotypes, p), then each child takes, per
    # SNP, one haplotype of each parent: (n_families, family_size, 2 parents, p).
    haplotypes = rng.random((n_families, 2, 2, n_snps)) < family_freq[:, None, None, :]
    pick = rng.random((n_families, family_size, 2, n_snps)) < 0.5
    inherited = np.where(pick, haplotypes[:, None, :, 1, :], haplotypes[:, None, :, 0, :])
    genotypes = inherited.sum(axis=2, dtype=np.int8).reshape(n_individuals, n_snps)
    family = np.repeat(np.arange(n_families), family_size)
    population = family_population[family]
    return Genotypes(genotypes, frequencies, ancestral, population, family)


def _as_genotype_matrix(genotypes, name: str = "genotypes") -> np.ndarray:
    if isinstance(genotypes, Genotypes):
        genotypes = genotypes.genotypes
    g = np.asarray(genotypes)
    if g.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (individuals, SNPs) matrix, got shape {g.shape}")
    if g.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numbers, got dtype {g.dtype}")
    return g


def standardize_genotypes(genotypes, frequencies=None) -> np.ndarray:
    """Centre and scale genotype columns: ``Z = (G - 2f) / sqrt(2 f (1 - f))``.

    Args:
        genotypes: ``(n, p)`` minor-allele counts (or a :class:`Genotypes`).
        frequencies: ``(p,)`` allele frequencies; default the in-sample ``f̂ = mean(G)/2``.

    Returns:
        ``(n, p)`` float64 array. Monomorphic columns (``2f(1-f)`` ≈ 0) become zeros.
    """
    g = _as_genotype_matrix(genotypes).astype(np.float64)
    if frequencies is None:
        f = g.mean(axis=0) / 2.0
    else:
        f = np.asarray(frequencies, np.float64)
        if f.shape != (g.shape[1],):
            raise ValueError(f"frequencies: expected shape ({g.shape[1]},), got {f.shape}")
    var = 2.0 * f * (1.0 - f)
    ok = var > 1e-12
    z = (g - 2.0 * f) / np.sqrt(np.where(ok, var, 1.0))
    z[:, ~ok] = 0.0
    return z


def genetic_relatedness_matrix(genotypes, *, standardize: bool = True) -> np.ndarray:
    """Genetic relatedness matrix ``K = Z Zᵀ / p``.

    Args:
        genotypes: ``(n, p)`` genotype matrix (or a :class:`Genotypes`).
        standardize: standardise columns first with :func:`standardize_genotypes` (default);
            ``False`` uses the matrix as given (e.g. already standardised).

    Returns:
        ``(n, n)`` symmetric positive semi-definite float64 matrix; with standardisation its
        mean diagonal is close to 1 for outbred individuals.
    """
    if standardize:
        z = standardize_genotypes(genotypes)
    else:
        z = _as_genotype_matrix(genotypes).astype(np.float64)
    k = z @ z.T / z.shape[1]
    return (k + k.T) / 2.0


def simulate_covariates(seed, n_individuals: int, n_covariates: int = 1, *, intercept: bool = True) -> np.ndarray:
    """Covariates: an intercept column (if ``intercept``) then standard-Normal columns.

    Returns:
        ``(n_individuals, n_covariates)`` float64; with ``intercept`` the first column is ones.
    """
    n_individuals = _positive_int(n_individuals, "n_individuals")
    n_covariates = _positive_int(n_covariates, "n_covariates")
    rng = as_generator(seed)
    x = rng.standard_normal((n_individuals, n_covariates))
    if intercept:
        x[:, 0] = 1.0
    return x


def simulate_phenotype(
    seed,
    genotypes,
    *,
    heritability: float = 0.5,
    n_causal: int = 3,
    causal_fraction: float = 0.5,
    covariates=None,
    covariate_effects=None,
    scale: float = 1.0,
    causal=None,
) -> Phenotype:
    """Simulate a quantitative trait with a chosen heritability.

    ``y = X β + Z[:, causal] b + u + e`` (see the module docstring). The expected genetic
    variance is ``h²·scale``; a share ``causal_fraction`` of it comes from the ``n_causal``
    causal SNPs and the rest from the polygenic background over all SNPs.

    Args:
        seed: ``int``, :class:`numpy.random.Generator` or :func:`jax.random.key`.
        genotypes: ``(n, p)`` minor-allele counts (or a :class:`Genotypes`).
        heritability: ``h²`` in ``[0, 1]``.
        n_causal: number of causal SNPs (chosen at random without replacement); may be 0.
        causal_fraction: share of the genetic variance due to the causal SNPs, in ``[0, 1]``.
        covariates: ``(n, c)`` covariates ``X``; default an intercept column.
        covariate_effects: ``(c,)`` ``β``; default zeros.
        scale: total variance of the random part (genetic + noise), ``> 0``.
        causal: optional explicit column indices of the causal SNPs (then ``n_causal`` is
            ignored).

    Returns:
        :class:`Phenotype`.
    """
    g = _as_genotype_matrix(genotypes)
    n, p = g.shape
    h2 = float(heritability)
    if not 0.0 <= h2 <= 1.0:
        raise ValueError(f"heritability: expected a value in [0, 1], got {heritability}")
    if not 0.0 <= float(causal_fraction) <= 1.0:
        raise ValueError(f"causal_fraction: expected a value in [0, 1], got {causal_fraction}")
    if not float(scale) > 0.0:
        raise ValueError(f"scale: expected a positive total variance, got {scale}")
    rng = as_generator(seed)
    if causal is None:
        if isinstance(n_causal, (bool, np.bool_)) or not isinstance(n_causal, (int, np.integer)) or not 0 <= n_causal <= p:
            raise ValueError(f"n_causal: expected an integer in [0, {p}], got {n_causal!r}")
        causal = np.sort(rng.choice(p, int(n_causal), replace=False))
    else:
        causal = np.unique(np.asarray(causal, dtype=np.int64).reshape(-1))
        if causal.size and (causal.min() < 0 or causal.max() >= p):
            raise ValueError(f"causal: expected column indices in [0, {p}), got {causal}")
    n_causal = causal.size

    if covariates is None:
        covariates = np.ones((n, 1))
    covariates = np.asarray(covariates, np.float64)
    if covariates.ndim == 1:
        covariates = covariates[:, None]
    if covariates.ndim != 2 or covariates.shape[0] != n:
        raise ValueError(f"covariates: expected shape ({n}, c), got {covariates.shape}")
    if covariate_effects is None:
        covariate_effects = np.zeros(covariates.shape[1])
    covariate_effects = np.asarray(covariate_effects, np.float64).reshape(-1)
    if covariate_effects.shape[0] != covariates.shape[1]:
        raise ValueError(
            f"covariate_effects: expected {covariates.shape[1]} values (one per covariate column), "
            f"got {covariate_effects.shape[0]}"
        )

    genetic_variance = h2 * float(scale)
    causal_variance = genetic_variance * float(causal_fraction) if n_causal else 0.0
    poly_variance = genetic_variance - causal_variance
    noise_variance = (1.0 - h2) * float(scale)

    z = standardize_genotypes(g)
    effects = rng.standard_normal(n_causal) * np.sqrt(causal_variance / max(n_causal, 1))
    causal_part = z[:, causal] @ effects
    weights = rng.standard_normal(p) * np.sqrt(poly_variance)
    polygenic = z @ weights / np.sqrt(p)
    noise = rng.standard_normal(n) * np.sqrt(noise_variance)
    fixed = covariates @ covariate_effects
    y = fixed + causal_part + polygenic + noise
    return Phenotype(y, fixed, causal_part, polygenic, noise, causal, effects, covariates, covariate_effects, h2)


def simulate_glmm_phenotype(
    seed,
    genotypes,
    *,
    likelihood: str = "bernoulli",
    ntrials=None,
    max_trials: int = 30,
    **latent_options,
) -> CountPhenotype:
    """Simulate a binary, binomial or count trait from a latent Gaussian trait.

    The latent ``z`` is a :func:`simulate_phenotype` draw (``latent_options`` go there:
    ``heritability``, ``n_causal``, ``covariates``, ``covariate_effects``, ``scale``, ...;
    ``h²`` is then on the latent scale). Outcomes: Bernoulli(``sigmoid(z)``),
    Binomial(``ntrials``, ``sigmoid(z)``) or Poisson(``exp(z)``).

    Args:
        seed: ``int``, :class:`numpy.random.Generator` or :func:`jax.random.key`.
        genotypes: ``(n, p)`` minor-allele counts (or a :class:`Genotypes`).
        likelihood: ``"bernoulli"``, ``"binomial"`` or ``"poisson"``.
        ntrials: binomial only: ``(n,)`` positive integer trial counts; default uniform in
            ``1..max_trials``.
        max_trials: upper bound of the default binomial trial counts.

    Returns:
        :class:`CountPhenotype`.
    """
    likelihood = str(likelihood).lower()
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood: expected one of {LIKELIHOODS}, got {likelihood!r}")
    g = _as_genotype_matrix(genotypes)
    n = g.shape[0]
    rng = as_generator(seed)
    latent = simulate_phenotype(rng, g, **latent_options)
    z = latent.y
    if likelihood == "poisson":
        return CountPhenotype(rng.poisson(np.exp(z)).astype(np.float64), None, likelihood, latent)
    if likelihood == "bernoulli":
        trials = np.ones(n)
    elif ntrials is None:
        trials = rng.integers(1, _positive_int(max_trials, "max_trials") + 1, n).astype(np.float64)
    else:
        trials = np.asarray(ntrials, np.float64).reshape(-1)
        if trials.shape[0] != n or not np.all(trials >= 1) or not np.all(trials == np.round(trials)):
            raise ValueError(f"ntrials: expected {n} positive integer trial counts, got {trials.shape[0]} values")
    y = rng.binomial(trials.astype(np.int64), 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    return CountPhenotype(y, trials, likelihood, latent)


def simulate_cohort(
    seed,
    n_individuals: int = 500,
    n_snps: int = 1000,
    *,
    heritability: float = 0.5,
    n_causal: int = 3,
    causal_fraction: float = 0.5,
    n_covariates: int = 1,
    covariate_effects=None,
    likelihood: str = "normal",
    maf_range: tuple[float, float] = (0.05, 0.5),
    n_populations: int = 1,
    fst: float = 0.0,
    family_size: int = 1,
    **likelihood_options,
) -> Cohort:
    """One call for a cohort: genotypes, standardised genotypes, GRM and a phenotype.

    ``likelihood="normal"`` gives a :class:`Phenotype`; ``"bernoulli"``, ``"binomial"`` or
    ``"poisson"`` a :class:`CountPhenotype` (``likelihood_options`` such as ``ntrials`` go to
    :func:`simulate_glmm_phenotype`). Covariates are an intercept plus ``n_covariates - 1``
    standard-Normal columns; ``covariate_effects`` defaults to zeros.
    """
    rng = as_generator(seed)
    geno = simulate_genotypes(
        rng, n_individuals, n_snps, maf_range=maf_range, n_populations=n_populations, fst=fst,
        family_size=family_size,
    )
    z = standardize_genotypes(geno.genotypes)
    kinship = genetic_relatedness_matrix(z, standardize=False)
    covariates = simulate_covariates(rng, n_individuals, n_covariates)
    options = dict(
        heritability=heritability, n_causal=n_causal, causal_fraction=causal_fraction,
        covariates=covariates, covariate_effects=covariate_effects,
    )
    if str(likelihood).lower() == "normal":
        if likelihood_options:
            raise TypeError(f"unexpected options for a Normal trait: {sorted(likelihood_options)}")
        phenotype = simulate_phenotype(rng, geno.genotypes, **options)
    else:
        phenotype = simulate_glmm_phenotype(rng, geno.genotypes, likelihood=likelihood, **options, **likelihood_options)
    return Cohort(geno, z, kinship, phenotype)
