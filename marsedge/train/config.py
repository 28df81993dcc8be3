"""Training configuration: frozen dataclasses with defaults that work, saved as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marsedge.errors import MarsEdgeError

LOSSES = ("focal", "focal_dice", "focal_lovasz", "cross_entropy")
SCHEDULES = ("cosine", "plateau", "constant")
CLASS_WEIGHTINGS = ("none", "inverse", "inverse_sqrt")
AUGMENTATIONS = ("none", "flips", "mild", "strong", "camera", "robust")
STRATEGIES = ("default", "mirrored")
EMA_SELECTIONS = ("average", "either")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the compact U-Net.

    Attributes:
        base_filters: filters of the first encoder block; each level doubles them.
        depth: number of 2x down-samplings after the stem (the bottleneck runs at 1/(stem_stride * 2**depth)).
        dilation_rates: parallel dilated 3x3 convolutions summed in the bottleneck.
        bottleneck_filters: bottleneck width; None for ``base_filters * 2**depth`` (capped at
            ``max_filters``).
        global_context: add a global-context block (GCNet-style) after the bottleneck.
        squeeze_excitation: add squeeze-excitation to every decoder block.
        dropout: spatial dropout rate in the bottleneck.
        stem_stride: 1 runs the first block at full resolution (the classic U-Net); 2 starts
            with a stride-2 3x3 convolution, runs the whole U-Net at half resolution and ends
            with a learned 2x up-sampling (a Conv2DTranspose producing the logits). With 2, no
            convolution but the stem runs at full resolution, and every one but the stem sees
            >= ``base_filters`` input channels: what lets int8 kernels beat float ones on CPUs
            without int8 dot-product instructions (docs/research.md).
        refine_filters: with stem_stride 2, 0 ends with the learned 2x up-sampling straight
            to logits; N > 0 ends with a light full-resolution head instead: the decoder
            output up-sampled to N channels, concatenated with N/2 channels of a 3x3 conv on
            the input tile itself, one 3x3 conv of N filters and 1x1 logits, so edges finer
            than half resolution (small rocks) can reach the output.
        stem_pool: with stem_stride 2, the first block sees the frame area-averaged 2x (a 2x2
            average pool) at stride 1 instead of a stride-2 convolution: the U-Net body then
            computes exactly what a stem_stride-1 model computes on a frame of half the pixels,
            so that model's weights (the bundled 128-px file) start it unchanged.
        refine_residual: with refine_filters, the decoder's half-resolution logits (layer
            ``logits``) are up-sampled bilinearly and the refine head adds a full-resolution
            correction (``refine_logits``, zero at the start) instead of producing the logits
            alone: a model warm-started from a half-resolution file first predicts what that
            file predicts, up-sampled, and learns the detail on top.
        max_filters: cap on the width of any encoder/decoder level (``base_filters * 2**level``
            otherwise), so a deep full-resolution U-Net stays under a parameter budget: its
            deepest levels hold most of the weights. None: no cap.
    """

    base_filters: int = 24
    depth: int = 3
    dilation_rates: tuple[int, ...] = (1, 2, 4)
    bottleneck_filters: int | None = 96
    global_context: bool = False
    squeeze_excitation: bool = False
    dropout: float = 0.1
    stem_stride: int = 2
    refine_filters: int = 0
    max_filters: int | None = None
    stem_pool: bool = False
    refine_residual: bool = False

    def __post_init__(self) -> None:
        if self.stem_stride not in (1, 2):
            raise MarsEdgeError(f"stem_stride must be 1 or 2, got {self.stem_stride}")
        if not 4 <= self.base_filters <= 256:
            raise MarsEdgeError(f"base_filters must be in 4..256, got {self.base_filters}")
        if not 1 <= self.depth <= 5:
            raise MarsEdgeError(f"depth must be in 1..5, got {self.depth}")
        if not self.dilation_rates or any(r < 1 for r in self.dilation_rates):
            raise MarsEdgeError(f"dilation_rates must be positive integers, got {self.dilation_rates}")
        if self.max_filters is not None and self.max_filters < self.base_filters:
            raise MarsEdgeError(
                f"max_filters must be at least base_filters ({self.base_filters}), got {self.max_filters}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise MarsEdgeError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.refine_filters < 0 or (self.refine_filters and (self.stem_stride == 1 or self.refine_filters < 2)):
            raise MarsEdgeError(
                f"refine_filters must be 0, or at least 2 with stem_stride 2; got {self.refine_filters} "
                f"(stem_stride {self.stem_stride})"
            )
        if self.stem_pool and self.stem_stride != 2:
            raise MarsEdgeError(f"stem_pool needs stem_stride 2, got {self.stem_stride}")
        if self.refine_residual and not self.refine_filters:
            raise MarsEdgeError(
                "refine_residual corrects the up-sampled logits in the refine head: it needs refine_filters"
            )


# What a mix_with partner may change: how it trains, never what it is or what it sees.
MIX_WITH_KEYS = (
    "epochs", "batch_size", "seed", "learning_rate", "weight_decay", "schedule", "warmup_epochs", "patience", "loss",
    "focal_gamma", "class_weighting", "augment", "teachers", "distill_weight", "distill_temperature",
    "distill_class_weighted", "ema_decay", "ema_select", "consistency_weight",
)  # fmt: skip
MIX_PARTNER_DIR = "mixed_with"


@dataclass(frozen=True)
class TrainConfig:
    """Everything needed to repeat a training run.

    Attributes:
        data: AN2DL-layout .npz file or a folder of image/mask PNG pairs.
        out: run directory.
        epochs: maximum number of epochs.
        batch_size: tiles per batch.
        seed: seeds the split, shuffling, augmentation and initial weights.
        split_seed: seeds the split (and ``limit``'s choice of frames) instead of ``seed``, so
            runs that differ only in ``seed`` share one split and can be compared tile by
            tile, or distil from teachers trained on it. None: ``seed``.
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        schedule: "cosine" (with warm-up), "plateau" or "constant".
        warmup_epochs: linear warm-up length for the cosine schedule.
        patience: early stopping patience in epochs on validation mean IoU.
        loss: "focal", "focal_dice" (focal + soft Dice), "focal_lovasz" (focal +
            Lovasz-softmax) or "cross_entropy".
        focal_gamma: focusing parameter of the focal loss.
        class_weighting: "none", "inverse" or "inverse_sqrt" pixel frequency.
        ignore_background: class 0 (unlabeled) is ignored by loss and metric, and the
            model predicts classes 1..4 only.
        val_fraction: share of frames for validation (early stopping, model selection).
        test_fraction: share of frames held out for the final, untouched test figure.
        augment: "none", "flips" (left-right mirror only: the camera's view stays upright),
            "mild" (flips, and half the tiles zoomed in up to 1.2x and shifted up to 5%: no
            rotation, no up-down flip, grey levels untouched) or "strong" (left-right and
            up-down flips, rotation, zoom, shift, brightness/contrast, noise). "mild" and
            "strong" both measured worse on NavCam tiles. "robust": flips, and on three
            frames in four a random mix of what real cameras and downlinks do (exposure:
            gain, gamma, contrast; defocus blur; resampling from another frame size; sensor
            noise, Gaussian and signal-dependent; JPEG), applied at the camera's resolution
            (``sources``, twice the model's) before the frame is reduced to the model's.
        clean: drop outlier samples (all-unlabeled masks, masks shared by many images,
            exact duplicates).
        limit: use about N tiles, whole frames drawn at random (quick runs); None for all.
        mixed_precision: float16 compute on a GPU.
        strategy: "default" or "mirrored" (several GPUs on one machine).
        preview_tiles: validation tiles in the preview grid.
        init_from: run directory whose best weights start this run (fine-tuning with a fresh
            optimizer and schedule); it must have the same model shape and the same
            train/val/test split, so its test tiles never reach training; or a float32
            .tflite that ``marsedge export`` wrote (the bundled ``marsedge_float32.tflite``),
            checked by the split its metadata records, whose batch normalisation stays fixed
            (:mod:`marsedge.train.tflite_weights`). None: random weights.
        teachers: run directories whose best weights, flip-averaged and averaged together,
            give per-pixel soft targets for knowledge distillation (same data and split as
            this run, like ``init_from``; any model shape), or .tflite files exported from
            such runs (their metadata's ``source_split`` proves the split; the bundled
            float32 model records it). Empty: no distillation.
        distill_weight: weight of the distillation term (KL divergence from the teachers'
            probabilities, on every pixel, labelled or not) added to ``loss``.
        distill_temperature: softmax temperature of teachers and student in that term.
        distill_class_weighted: weight each pixel's distillation term by the class weights
            (``class_weighting``) the teachers expect there, scaled to a mean of 1 over the
            labelled training pixels, so rare classes (big rock) carry their hard-loss
            weight in the soft term too. False: every pixel counts the same.
        ema_decay: keep an exponential moving average of the weights with this decay per
            training step (0.999: a horizon of about 1,000 steps) and validate, select and
            save the averaged weights; the raw weights' val mIoU is logged beside them
            (``val_miou_raw`` in history.csv). 0: off.
        ema_select: with ``ema_decay``, which weights an epoch offers for the best checkpoint:
            "average" (the averaged ones) or "either" (whichever of the averaged and the raw
            weights scores the higher val mIoU that epoch; ``val_miou`` is then that score,
            ``val_miou_average`` and ``val_weights`` in history.csv say which it was). Near
            the end of a cosine schedule the raw weights can overtake the average, but
            their val score is noisier, so the best of them is an optimistic pick
            (measured on the shipped recipe: val +0.7, test ±0; docs/research.md).
        consistency_weight: > 0 trains on pairs: every frame clean and with the ``augment``
            corruptions ("camera" or "robust"); the task loss (and distillation) scores the
            clean view, and this weight times the KL divergence from the clean view's
            prediction (a fixed target) to the corrupted view's is added (AugMix's consistency
            term, :func:`marsedge.train.losses.make_consistency_loss`), so robustness is
            learnt without fitting labels to corrupted pixels. Each step then runs ``2 * batch_size``
            frames. 0: off (corrupted frames are scored like clean ones).
        frame_pixels: model pixels across a whole frame (its longer side). Frame datasets (the
            AI4Mars layout) are resized to it, and exports record it as the model's field of
            view (``model_pixels_per_frame``): the runtime resizes any whole frame to it.
            Tile datasets (the .npz layout) are already at the model's resolution: 128 for
            the shared file, whose 256-px frames were reduced 2x.
        split_from: with a frame dataset, a tile file cut from the same frames (frame k in
            sorted id order gave tiles 2k and 2k+1, as for the shared files): the frames take
            that file's split (same seed and fractions), so models trained on the tiles (the
            bundled ones) can teach without having seen a validation or test frame.
        mix_alpha: with a value in (0, 1], the run's weights are mixed at the end with a
            partner's in weight space, layer by layer (a model soup; WiSE-FT, Wortsman et al.
            2022): ``mix_alpha`` x this run's last-epoch weights (their average, with
            ``ema_decay``) + (1 - ``mix_alpha``) x the partner's, written as the run's best
            weights (the unmixed best stay in ``fine_tuned.weights.h5``, the recipe in
            ``mix.json``). Both must come from the same start with the same batch-norm fold:
            it needs ``init_from``. None: off.
        mix_with: the partner: None for the ``init_from`` weights themselves, or a dict of
            training settings (``augment``, ``epochs``, ``teachers``, ``consistency_weight``,
            ...) for a second run from the same start, same data and split, trained after this
            one in ``OUT/mixed_with`` (its best weights are mixed).
        model: the network shape.
    """

    data: str = ""
    out: str = "runs/exp"
    epochs: int = 40
    batch_size: int = 32
    seed: int = 0
    split_seed: int | None = None
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: int = 1
    patience: int = 10
    loss: str = "focal_dice"
    focal_gamma: float = 2.0
    class_weighting: str = "inverse_sqrt"
    ignore_background: bool = True
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    augment: str = "flips"
    clean: bool = True
    limit: int | None = None
    mixed_precision: bool = False
    strategy: str = "default"
    preview_tiles: int = 8
    init_from: str | None = None
    teachers: tuple[str, ...] = ()
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    distill_class_weighted: bool = False
    ema_decay: float = 0.0
    ema_select: str = "average"
    consistency_weight: float = 0.0
    frame_pixels: int = 128
    split_from: str | None = None
    mix_alpha: float | None = None
    mix_with: dict[str, Any] | None = None
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        for name, allowed in (
            ("loss", LOSSES),
            ("schedule", SCHEDULES),
            ("class_weighting", CLASS_WEIGHTINGS),
            ("augment", AUGMENTATIONS),
            ("strategy", STRATEGIES),
            ("ema_select", EMA_SELECTIONS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise MarsEdgeError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise MarsEdgeError("epochs and batch_size must be at least 1")
        if not 0 < self.val_fraction < 0.5 or not 0 <= self.test_fraction < 0.5:
            raise MarsEdgeError("val_fraction must be in (0, 0.5) and test_fraction in [0, 0.5)")
        if self.distill_weight < 0 or self.distill_temperature <= 0:
            raise MarsEdgeError("distill_weight must be >= 0 and distill_temperature > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise MarsEdgeError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.ema_select == "either" and not self.ema_decay:
            raise MarsEdgeError("ema_select 'either' chooses between averaged and raw weights: it needs ema_decay > 0")
        if self.consistency_weight < 0:
            raise MarsEdgeError(f"consistency_weight must be >= 0, got {self.consistency_weight}")
        if self.consistency_weight and self.augment not in ("camera", "robust"):
            raise MarsEdgeError(
                f"consistency_weight compares clean and corrupted views: it needs augment 'camera' or 'robust', "
                f"got {self.augment!r}"
            )
        if not 16 <= self.frame_pixels <= 4096:
            raise MarsEdgeError(f"frame_pixels must be in 16..4096, got {self.frame_pixels}")
        if self.split_from and self.limit:
            raise MarsEdgeError("split_from takes another file's split whole: it cannot be combined with limit")
        if self.limit is not None and self.limit < 4:
            raise MarsEdgeError(f"limit must be at least 4 tiles, got {self.limit}")
        self._check_mix()

    def _check_mix(self) -> None:
        if self.mix_alpha is None:
            if self.mix_with is not None:
                raise MarsEdgeError("mix_with names a partner to mix with: it needs mix_alpha")
            return
        if not 0.0 < self.mix_alpha <= 1.0:
            raise MarsEdgeError(f"mix_alpha must be in (0, 1], got {self.mix_alpha}")
        if not self.init_from:
            raise MarsEdgeError("mix_alpha mixes weights that share a start: it needs init_from")
        if self.mix_with is None:
            return
        if not isinstance(self.mix_with, dict):
            raise MarsEdgeError(f"mix_with must be a dict of training settings or null, got {self.mix_with!r}")
        unknown = set(self.mix_with) - set(MIX_WITH_KEYS)
        if unknown:
            raise MarsEdgeError(
                f"mix_with keys not allowed: {', '.join(sorted(unknown))} (the partner shares this run's data, "
                f"split, start and model); allowed: {', '.join(MIX_WITH_KEYS)}"
            )
        self.partner()  # its own settings are checked as any run's

    def partner(self) -> TrainConfig:
        """The config of the ``mix_with`` partner run (in ``OUT/mixed_with``)."""
        split_seed = self.seed if self.split_seed is None else self.split_seed  # another seed, the same split
        return TrainConfig.from_dict({
            **self.to_dict(), **(self.mix_with or {}),
            "out": str(Path(self.out) / MIX_PARTNER_DIR), "mix_alpha": None, "mix_with": None, "split_seed": split_seed,
        })  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a (possibly partial) dict, rejecting unknown keys."""
        values = dict(values)
        model_values = dict(values.pop("model", {}) or {})
        for key, allowed in (("top", cls), ("model", ModelConfig)):
            names = {f.name for f in dataclasses.fields(allowed)}
            unknown = set(values if key == "top" else model_values) - names
            if unknown:
                raise MarsEdgeError(
                    f"unknown {'model ' if key == 'model' else ''}config keys: {', '.join(sorted(unknown))}; "
                    f"allowed: {', '.join(sorted(names))}"
                )
        if "teachers" in values:
            values["teachers"] = tuple(values["teachers"] or ())
        if "dilation_rates" in model_values:
            model_values["dilation_rates"] = tuple(model_values["dilation_rates"])
        return cls(**values, model=ModelConfig(**model_values))

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise MarsEdgeError(f"{path}: config file not found") from None
        except json.JSONDecodeError as exc:
            raise MarsEdgeError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None

    def replace(self, **changes: Any) -> TrainConfig:
        model_changes = changes.pop("model", None)
        config = dataclasses.replace(self, **changes)
        if model_changes:
            config = dataclasses.replace(config, model=dataclasses.replace(config.model, **model_changes))
        return config
