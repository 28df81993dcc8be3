"""Errors the edge runtime raises for bad models and bad images.

Both carry a message meant for one line of output, already naming the problem; the CLI
prefixes the path and prints it.
"""


class ModelError(Exception):
    """The model file is missing, is not a TFLite model, lacks marsedge metadata, or does
    not match the model contract (input/output shapes, class list)."""


class ImageError(Exception):
    """An image cannot be read or used: not an image, truncated, too large, wrong shape."""
