from jaxinfer.optimize import *  # noqa: F401,F403  (scipy.optimize -> jaxinfer.optimize)
