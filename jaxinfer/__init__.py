"""jaxinfer: scientific inference tools rewritten in JAX.

Subpackages
-----------
optimize   solvers as pure JAX functions (Levenberg–Marquardt, BFGS, L-BFGS-B, Newton-CG,
           first-order optax methods, constrained problems, curve_fit)
spt        single-particle-tracking maps (TRamWAy)
glmm       linear / generalised linear mixed models and Gaussian processes (glimix-core)
imaging    confocal particle images (peri)
mixture    lymphatic-spread HMMs and their mixtures (lymph-model, lymixture)
scipy      scipy-named front doors: integrate, interpolate, fft, stats, differentiate, optimize
sampling   the one NumPyro NUTS driver (chunks, checkpoints, exact resume)
"""

__version__ = "0.1.0"
