"""Solvers as pure JAX functions.

Every solver takes a pytree ``x0``, gets derivatives from autodiff unless told otherwise, runs
as a ``lax.while_loop`` (so it jits and vmaps) and returns an :class:`OptimizeResult` whose
``success`` is true only when a convergence test passed.
"""

from jaxinfer.optimize.result import (OptimizeResult, OptimizeWarning, Status, is_success,
                                      status_message)

__all__ = ["OptimizeResult", "OptimizeWarning", "Status", "is_success", "status_message"]
from jaxinfer.optimize.constraints import (Bounds, LinearConstraint,  # noqa: E402
                                           NonlinearConstraint)
from jaxinfer.optimize.hessian_update import SR1, HessianUpdateStrategy  # noqa: E402
from jaxinfer.optimize.minimize import minimize  # noqa: E402
from jaxinfer.optimize.scalar import minimize_scalar  # noqa: E402
from jaxinfer.optimize.legacy import (fmin_bfgs, fmin_l_bfgs_b, fmin_ncg,  # noqa: E402
                                      fmin_slsqp, rosen, rosen_der, rosen_hess,
                                      rosen_hess_prod)

__all__ += ["Bounds", "LinearConstraint", "NonlinearConstraint", "HessianUpdateStrategy", "SR1",
            "minimize", "minimize_scalar", "fmin_bfgs", "fmin_l_bfgs_b", "fmin_ncg",
            "fmin_slsqp", "rosen", "rosen_der", "rosen_hess", "rosen_hess_prod"]
from jaxinfer.optimize.block import chain_groups, colour_groups, minimize_block_bfgs  # noqa: E402

__all__ += ["chain_groups", "colour_groups", "minimize_block_bfgs"]
from jaxinfer.optimize.least_squares import least_squares, levenberg_marquardt  # noqa: E402,E501
from jaxinfer.optimize.curve_fit import curve_fit  # noqa: E402

__all__ += ["curve_fit", "least_squares", "levenberg_marquardt"]
from jaxinfer.optimize.fixed_point import FixedPoint, fixed_point  # noqa: E402

__all__ += ["FixedPoint", "fixed_point"]
from jaxinfer.optimize.lm import LeastSquaresProblem, LevenbergMarquardt, LMState  # noqa: E402
from jaxinfer.optimize.linear_solve import DenseEigh, DenseSVD, NormalEquations  # noqa: E402

__all__ += ["LeastSquaresProblem", "LevenbergMarquardt", "LMState", "DenseEigh", "DenseSVD",
            "NormalEquations"]
from jaxinfer.optimize.quasi_newton import (BFGS, LBFGSB, BFGSState, LBFGSBState,  # noqa: E402
                                            LbfgsInvHessProduct)

__all__ += ["BFGS", "LBFGSB", "BFGSState", "LBFGSBState", "LbfgsInvHessProduct"]
from jaxinfer.optimize.implicit import (implicit_least_squares, implicit_minimum,  # noqa: E402
                                        implicit_root, implicit_solve)

__all__ += ["implicit_least_squares", "implicit_minimum", "implicit_root", "implicit_solve"]
from jaxinfer.optimize.sqp import SQP, SQPState  # noqa: E402

__all__ += ["SQP", "SQPState"]
