"""Errors the edge runtime raises for bad models and bad images.

Both carry a message meant for one line of output, already naming the problem; the CLI
prefixes the path and prints it.
"""

from marsedge.core.errors import ModelError

__all__ = ["ImageError", "ModelError"]


class ImageError(Exception):
    """An image cannot be read or used: not an image, truncated, too large, wrong shape."""
