"""The model metadata, as the edge runtime uses it: a re-export of
:mod:`marsedge.core.metadata`, the one module that writes and reads it."""

from marsedge.core.metadata import (  # noqa: F401
    CHECKSUM_NAME,
    FORMAT,
    LEGACY_FORMAT,
    MAX_INPUT_SCALE,
    METADATA_NAME,
    ClassInfo,
    FieldOfView,
    build_metadata,
    check_flatbuffer,
    class_table,
    embed_metadata,
    input_normalization,
    read_metadata,
    temperature,
)
