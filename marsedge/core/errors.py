"""The error the model metadata schema raises (re-exported by the edge runtime)."""


class ModelError(Exception):
    """The model file is missing, is not a TFLite model, lacks marsedge metadata, or does
    not match the model contract (input/output shapes, class list)."""
