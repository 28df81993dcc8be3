"""Class masks and probabilities from a Keras model, tile by tile (needs the train extra)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from marsedge.errors import DataError


def predict_classes(model, images: np.ndarray, output_classes: list[int], batch_size: int = 64) -> np.ndarray:
    """Class-id masks from a Keras model for uint8 tiles ``(N,H,W)``."""
    logits = model.predict(images[..., None].astype(np.float32), batch_size=batch_size, verbose=0)
    return np.asarray(output_classes, dtype=np.uint8)[np.argmax(logits, axis=-1)]


class KerasTileModel:
    """A run directory's float Keras model (best weights), with the tile interface of
    :class:`marsedge.edge_runtime.tile_model.TileModel`."""

    def __init__(self, model, output_classes: list[int], input_shape: tuple[int, int]):
        self.model = model
        self.output_classes = np.asarray(output_classes, dtype=np.uint8)
        self.height, self.width = input_shape

    @classmethod
    def from_run(cls, run_dir: str | Path) -> KerasTileModel:
        from marsedge.train import rundir

        run = rundir.read_run(run_dir)
        return cls(rundir.load_model(run), run.output_classes, run.input_shape)

    def predict_masks(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class-id masks ``(N, H, W)`` for uint8 tiles ``(N, H, W)`` of the model's size.

        Raises:
            DataError: the tiles are not the model's input size.
        """
        self._check_size(images)
        return predict_classes(self.model, images, list(self.output_classes), batch_size=batch_size)

    def probabilities(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Softmax class probabilities ``(N, H, W, C)`` float32 for uint8 tiles ``(N, H, W)``."""
        self._check_size(images)
        logits = self.model.predict(images[..., None].astype(np.float32), batch_size=batch_size, verbose=0)
        logits = np.asarray(logits, np.float32)
        logits -= logits.max(axis=-1, keepdims=True)
        np.exp(logits, out=logits)
        return logits / logits.sum(axis=-1, keepdims=True)

    def _check_size(self, images: np.ndarray) -> None:
        from marsedge.edge_runtime.errors import ImageError
        from marsedge.edge_runtime.tile_model import check_tile_size

        try:
            check_tile_size(images, (self.height, self.width))
        except ImageError as exc:
            raise DataError(str(exc)) from None
