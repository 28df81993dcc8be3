"""A tiny trained run directory for tests (export, eval, bench), made once per session.

``make_tiny_run(root)`` writes a synthetic AN2DL file (64 tiles) and trains a 4-filter,
stride-2-stem (the shipped shape),
depth-2 U-Net on it for six short epochs (seconds on a laptop CPU). The run is cached
per variant for the whole session: the first call trains it under its ``root``, later
calls return that directory whatever root they pass. Treat it as read-only (export
with an ``out`` of your own)::

    from _runs import make_tiny_run

    @pytest.fixture(scope="session")
    def tiny_run(tmp_path_factory):
        return make_tiny_run(tmp_path_factory.mktemp("runs"))
"""

from __future__ import annotations

from pathlib import Path

TILES = 64
SEED = 0

_cache: dict[bool, Path] = {}


def make_tiny_run(root: Path, attention: bool = False) -> Path:
    """Train (once per session and variant) a tiny run and return its directory.

    Args:
        root: folder for the data file and run directory.
        attention: also enable squeeze-excitation and the global-context block (the
            layers tfmot has no default recipe for).
    """
    root = Path(root)
    if attention in _cache:
        return _cache[attention]
    from marsedge.train.config import ModelConfig, TrainConfig
    from marsedge.train.synthetic import write_dataset
    from marsedge.train.trainer import train

    data = root / "tiny.npz"
    if not data.exists():
        write_dataset(data, TILES, seed=SEED)
    out = root / ("tiny_attention_run" if attention else "tiny_run")
    config = TrainConfig(
        data=str(data),
        out=str(out),
        epochs=6,
        batch_size=8,
        seed=SEED,
        learning_rate=1e-2,
        warmup_epochs=0,
        augment="none",
        loss="cross_entropy",
        val_fraction=0.2,
        test_fraction=0.1,
        preview_tiles=2,
        model=ModelConfig(
            base_filters=4,
            depth=2,
            dilation_rates=(1, 2),
            bottleneck_filters=None,
            stem_stride=2,
            global_context=attention,
            squeeze_excitation=attention,
        ),
    )
    train(config, progress=False)
    _cache[attention] = out
    return out
