"""Simulated cohorts agree with the settings they were drawn from (statistical checks)."""

import jax
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from jaxinfer.glmm import simulate as sim


@pytest.fixture(scope="module")
def unrelated():
    return sim.simulate_genotypes(1, 600, 800, maf_range=(0.05, 0.5))


def test_allele_frequencies_match_hardy_weinberg_draws(unrelated):
    g = np.asarray(unrelated.genotypes, float)
    f = np.asarray(unrelated.frequencies[0])
    n = g.shape[0]
    assert set(np.unique(g)) <= {0.0, 1.0, 2.0}
    # Ancestral frequencies are uniform on the requested interval (KS test).
    ks = scipy.stats.kstest(f, scipy.stats.uniform(0.05, 0.45).cdf)
    assert ks.pvalue > 1e-3
    # In-sample frequency of 2n Bernoulli(f) alleles: z-scores are standard Normal.
    z = (g.mean(axis=0) / 2 - f) / np.sqrt(f * (1 - f) / (2 * n))
    assert abs(z.mean()) < 4 / np.sqrt(z.size)
    assert abs((z**2).mean() - 1) < 4 * np.sqrt(2 / z.size)
    # Heterozygote counts: Binomial(n, 2f(1-f)) under Hardy-Weinberg.
    het = (g == 1).sum(axis=0)
    p_het = 2 * f * (1 - f)
    z_het = (het - n * p_het) / np.sqrt(n * p_het * (1 - p_het))
    assert abs((z_het**2).mean() - 1) < 4 * np.sqrt(2 / z_het.size)


def test_grm_and_standardisation(unrelated):
    z = np.asarray(sim.standardize_genotypes(unrelated.genotypes))
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-10)
    k = np.asarray(sim.genetic_relatedness_matrix(unrelated.genotypes))
    np.testing.assert_allclose(k, z @ z.T / z.shape[1], rtol=1e-10, atol=1e-12)
    assert np.linalg.eigvalsh(k).min() > -1e-8
    # Unrelated outbred individuals: diagonal ~ 1, off-diagonal ~ 0 with sd ~ 1/sqrt(p).
    assert abs(np.diag(k).mean() - 1) < 0.02
    off = k[np.triu_indices_from(k, 1)]
    assert abs(off.mean()) < 0.01
    assert 0.5 / np.sqrt(z.shape[1]) < off.std() < 2 / np.sqrt(z.shape[1])
    # Monomorphic columns standardise to zeros instead of NaN.
    g = np.array([[0, 1], [0, 2], [0, 0]])
    out = np.asarray(sim.standardize_genotypes(g))
    assert np.all(out[:, 0] == 0) and np.all(np.isfinite(out))


def test_siblings_share_half_their_genome():
    geno = sim.simulate_genotypes(2, 300, 1500, family_size=3)
    k = np.asarray(sim.genetic_relatedness_matrix(geno.genotypes))
    family = np.asarray(geno.family)
    same = family[:, None] == family[None, :]
    off = ~np.eye(len(family), dtype=bool)
    sib = k[same & off]
    # Full siblings: expected relatedness 1/2, sd of the Mendelian sampling ~ 0.04 at 1500 loci.
    assert abs(sib.mean() - 0.5) < 0.02
    assert abs(k[~same].mean()) < 0.01
    np.testing.assert_array_equal(np.bincount(family), np.full(100, 3))


def test_balding_nichols_fst():
    fst = 0.1
    geno = sim.simulate_genotypes(3, 400, 1500, n_populations=2, fst=fst, maf_range=(0.1, 0.5))
    f = np.asarray(geno.ancestral_frequencies)
    fk = np.asarray(geno.frequencies)
    # E[(f_k - f)^2] = F f (1 - f) under Balding-Nichols.
    est = ((fk - f) ** 2 / (f * (1 - f))).mean()
    assert abs(est - fst) < 0.015
    # Population labels split the cohort evenly, and genotype frequencies follow each population.
    pop = np.asarray(geno.population)
    np.testing.assert_array_equal(np.bincount(pop), [200, 200])
    g = np.asarray(geno.genotypes, float)
    for k in range(2):
        fhat = g[pop == k].mean(axis=0) / 2
        z = (fhat - fk[k]) / np.sqrt(fk[k] * (1 - fk[k]) / (2 * 200))
        assert abs((z**2).mean() - 1) < 4 * np.sqrt(2 / z.size)


def _ml_heritability(y, X, K):
    """Independent ML estimate of h2 = 1 - delta with numpy eigh and scipy's bounded search."""
    s, q = np.linalg.eigh(K)
    qy, qx = q.T @ y, q.T @ X
    n = len(y)

    def neg_lml(delta):
        d = (1 - delta) * s + delta
        xtdx = qx.T @ (qx / d[:, None])
        beta = np.linalg.solve(xtdx, qx.T @ (qy / d))
        r = qy - qx @ beta
        scale = (r**2 / d).sum() / n
        return 0.5 * (n * np.log(2 * np.pi * scale) + np.log(d).sum() + n)

    res = scipy.optimize.minimize_scalar(neg_lml, bounds=(1e-6, 1 - 1e-6), method="bounded")
    return 1 - res.x


def test_heritability_is_recovered():
    h2 = 0.6
    cohort = sim.simulate_cohort(
        4, 600, 1000, heritability=h2, n_causal=0, n_covariates=2,
        covariate_effects=[1.0, -0.5], family_size=3,
    )
    ph = cohort.phenotype
    y, X, K = (np.asarray(a) for a in (ph.y, ph.covariates, cohort.kinship))
    np.testing.assert_allclose(y, np.asarray(ph.fixed + ph.causal_part + ph.polygenic + ph.noise), rtol=1e-12)
    np.testing.assert_allclose(X[:, 0], 1)
    np.testing.assert_allclose(np.asarray(ph.fixed), X @ np.array([1.0, -0.5]), rtol=1e-12)
    # The sibling structure gives an ML estimate with a standard error of about 0.06.
    assert abs(_ml_heritability(y, X, K) - h2) < 0.2


def test_realised_variance_components_average_to_the_settings():
    """Across replicate traits the realised genetic share averages to h2 and the causal SNPs to
    their share of it (expected variances, not forced ones)."""
    geno = sim.simulate_genotypes(5, 300, 400)
    keys = np.random.default_rng(6).spawn(40)
    h2, fraction = 0.4, 0.5
    shares, causal_shares, totals = [], [], []
    for key in keys:
        ph = sim.simulate_phenotype(key, geno, heritability=h2, n_causal=4, causal_fraction=fraction)
        genetic = np.asarray(ph.causal_part + ph.polygenic)
        total = np.asarray(ph.y).var()
        shares.append(genetic.var() / total)
        causal_shares.append(np.asarray(ph.causal_part).var() / total)
        totals.append(total)
        assert len(np.unique(np.asarray(ph.causal))) == 4
    shares, causal_shares = np.array(shares), np.array(causal_shares)
    assert abs(shares.mean() - h2) < 4 * shares.std() / np.sqrt(len(shares))
    assert abs(np.mean(totals) - 1) < 0.05
    assert abs(causal_shares.mean() - h2 * fraction) < 4 * causal_shares.std() / np.sqrt(len(shares)) + 0.02


@pytest.mark.parametrize("likelihood", ["bernoulli", "binomial", "poisson"])
def test_glmm_outcomes_follow_the_link(likelihood):
    geno = sim.simulate_genotypes(7, 400, 200)
    out = sim.simulate_glmm_phenotype(
        8, geno, likelihood=likelihood, heritability=0.5, n_causal=2,
        covariate_effects=[0.3],
    )
    z = np.asarray(out.latent.y)
    y = np.asarray(out.y)
    assert np.all(y >= 0) and np.all(y == np.round(y))
    if likelihood == "poisson":
        mean, var = np.exp(z), np.exp(z)
        assert out.ntrials is None
    else:
        p = 1 / (1 + np.exp(-z))
        trials = np.asarray(out.ntrials)
        assert np.all(y <= trials) and trials.min() >= 1
        if likelihood == "bernoulli":
            np.testing.assert_array_equal(trials, 1)
        mean, var = trials * p, trials * p * (1 - p)
    # Sum of outcomes given the latent field: mean and variance from the likelihood.
    assert abs((y - mean).sum() / np.sqrt(var.sum())) < 4
    # Per-observation standardised residuals have unit variance.
    assert abs(((y - mean) ** 2 / var).mean() - 1) < 0.35


def test_same_key_same_draw_and_errors():
    a = sim.simulate_cohort(11, 40, 30)
    b = sim.simulate_cohort(np.random.default_rng(11), 40, 30)
    np.testing.assert_array_equal(np.asarray(a.phenotype.y), np.asarray(b.phenotype.y))
    c = sim.simulate_cohort(12, 40, 30)
    assert not np.allclose(np.asarray(a.phenotype.y), np.asarray(c.phenotype.y))
    with pytest.raises(ValueError, match="maf_range"):
        sim.simulate_genotypes(0, 10, 10, maf_range=(0.2, 0.7))
    with pytest.raises(ValueError, match="multiple of family_size"):
        sim.simulate_genotypes(0, 10, 10, family_size=3)
    with pytest.raises(ValueError, match="heritability"):
        sim.simulate_phenotype(0, a.genotypes, heritability=1.5)
    with pytest.raises(ValueError, match="likelihood"):
        sim.simulate_glmm_phenotype(0, a.genotypes, likelihood="gamma")
    with pytest.raises(ValueError, match="covariate_effects"):
        sim.simulate_phenotype(0, a.genotypes, covariate_effects=[1.0, 2.0])
    with pytest.raises(TypeError, match="seed"):
        sim.simulate_genotypes("seed", 10, 10)


def test_jax_keys_seed_reproducibly():
    a = sim.simulate_cohort(jax.random.key(3), 20, 10, likelihood="poisson")
    b = sim.simulate_cohort(jax.random.key(3), 20, 10, likelihood="poisson")
    c = sim.simulate_cohort(jax.random.PRNGKey(4), 20, 10, likelihood="poisson")
    np.testing.assert_array_equal(a.genotypes.genotypes, b.genotypes.genotypes)
    assert not np.array_equal(a.genotypes.genotypes, c.genotypes.genotypes)
    assert a.genotypes.genotypes.dtype == np.int8 and a.kinship.dtype == np.float64
