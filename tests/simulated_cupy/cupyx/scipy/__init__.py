"""``cupyx.scipy`` of the simulated CuPy."""

from . import special  # noqa: F401
