"""The old ``scipy.misc.derivative(func, x0, dx=1.0, n=1, args=(), order=3)``, by autodiff."""

from jaxinfer.scipy.differentiate import misc_derivative as derivative

__all__ = ["derivative"]
