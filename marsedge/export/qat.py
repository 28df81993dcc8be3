"""Quantization-aware training: annotate every layer, apply tfmot, fine-tune on the run's data.

The float model is first folded (BatchNormalization merged into its convolution, see
:mod:`marsedge.export.fold`), then every layer is annotated: tfmot's default 8-bit
recipe where it has one, a marsedge ``QuantizeConfig`` where it has none (input
normalisation, squeeze-excitation multiply, global-context pooling) or where its rule is
wrong for us (a convolution straight into a ReLU). A layer nothing covers raises
:class:`QuantizationError` naming it, before tfmot gets to fail obscurely.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from marsedge.errors import MarsEdgeError
from marsedge.export.fold import consumers_of, fold_for_int8
from marsedge.train.model import DepthToSpace, SpatialSoftmaxPool
from marsedge.train.tf_env import keras, require_tfmot

log = logging.getLogger(__name__)
layers = keras.layers

INPUT_RANGE = (0.0, 255.0)  # raw grey levels, step 1: the QAT model sees each level exactly, as the file does


class QuantizationError(MarsEdgeError):
    """A layer of the model has no int8 quantisation recipe."""


# Layers that carry nothing to quantise of their own (tfmot passes their input range through).
_PASS_THROUGH = (layers.MaxPooling2D, layers.SpatialDropout2D, layers.Dropout, layers.Reshape)


def _quantize_configs():
    from marsedge.export import quantize_configs

    return quantize_configs


def quantize_scope():
    """tfmot's ``quantize_scope`` with marsedge's configs and layers registered."""
    tfmot = require_tfmot()
    return tfmot.quantization.keras.quantize_scope(_quantize_configs().custom_objects())


def layer_recipe(layer, consumers: dict[str, list], registry):
    """``(QuantizeConfig or None for tfmot's default, replacement layer or None)`` for one layer.

    Args:
        layer: a layer of the folded model (:func:`~marsedge.export.fold.fold_for_int8`).
        consumers: layer name -> the layers reading its output.
        registry: tfmot's default 8-bit registry (which layers it quantises itself).

    Raises:
        QuantizationError: nothing quantises this layer; the message names it and why.
    """
    configs = _quantize_configs()
    after = consumers.get(layer.name, [])
    into_relu = len(after) == 1 and isinstance(after[0], layers.ReLU)
    if isinstance(layer, SpatialSoftmaxPool):
        replacement = configs.QatSpatialSoftmaxPool.from_config(layer.get_config())
        return configs.OutputQuantizeConfig(), replacement
    if isinstance(layer, layers.Rescaling) and all(isinstance(l, layers.InputLayer) for l in _inbound(layer)):
        # the input normalisation leaves the int8 graph for the runtime's input table
        # (fold.split_input_normalization): the first convolution reads the exact
        # normalised grey levels, so no rounding here either
        return configs.PassThroughQuantizeConfig(), None
    if isinstance(layer, (layers.Rescaling, layers.Multiply)):
        return configs.OutputQuantizeConfig(), None
    if isinstance(layer, DepthToSpace):
        return configs.PassThroughQuantizeConfig(), None
    if isinstance(layer, layers.Conv2DTranspose):
        return (configs.ConvQuantizeConfig(per_axis=False) if into_relu else None), None
    if isinstance(layer, layers.Conv2D) and into_relu and layer.get_config()["activation"] == "linear":
        return configs.ConvQuantizeConfig(per_axis=True), None
    if isinstance(layer, layers.BatchNormalization):
        raise QuantizationError(
            f"layer {layer.name} (BatchNormalization): only a BatchNormalization right after a convolution "
            "(its only consumer) can be folded and quantised"
        )
    if isinstance(layer, _PASS_THROUGH) or registry.supports(layer):
        return None, None
    raise QuantizationError(
        f"layer {layer.name} ({type(layer).__name__}): no int8 QuantizeConfig for this layer type; "
        "add one in marsedge/export/quantize_configs.py or build the block from supported layers"
    )


def annotate(model):
    """Fold BatchNormalization and annotate every layer for QAT (float weights kept).

    Raises:
        QuantizationError: a layer cannot be quantised (named in the message).
    """
    tfmot = require_tfmot()
    qkeras = tfmot.quantization.keras
    folded = fold_for_int8(model)
    consumers = consumers_of(folded)
    registry = qkeras.default_8bit.Default8BitQuantizeScheme().get_quantize_registry()
    recipes = {
        layer.name: layer_recipe(layer, consumers, registry)
        for layer in folded.layers
        if not isinstance(layer, layers.InputLayer)
    }

    def wrap(layer):
        config, replacement = recipes[layer.name]
        target = replacement or layer
        if replacement is not None:
            target.build(layer.input_shape)
        return qkeras.quantize_annotate_layer(target, config)

    with quantize_scope():
        annotated = keras.models.clone_model(folded, clone_function=wrap)
    annotated.set_weights(folded.get_weights())
    return annotated


def _scheme():
    """tfmot's default 8-bit scheme with only the layout rules marsedge relies on.

    Kept: the input quantiser and "quantise concatenations after, not before". Dropped:
    the Conv2D/Add + ReLU rule (``LayerReLUQuantize``), which replaces a convolution's
    QuantizeConfig with a no-op one and so drops its weight quantiser even when a config
    was given (marsedge annotates those convolutions itself, :class:`ConvQuantizeConfig`),
    and the Conv + BatchNorm rules, which have nothing to match after folding. Relies on
    tfmot internals, pinned by the ``[train]`` extra (tensorflow-model-optimization==0.8.1).
    """
    require_tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_layout_transform as layout,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_scheme as scheme,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_transforms as transforms,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (
        model_transformer,
    )

    class LayoutTransform(layout.Default8BitQuantizeLayoutTransform):
        def apply(self, model, layer_quantize_map):
            rules = [
                transforms.InputLayerQuantize(),
                transforms.ConcatTransform6Inputs(),
                transforms.ConcatTransform5Inputs(),
                transforms.ConcatTransform4Inputs(),
                transforms.ConcatTransform3Inputs(),
                transforms.ConcatTransform(),
            ]
            return model_transformer.ModelTransformer(
                model, rules, set(layer_quantize_map.keys()), layer_quantize_map
            ).transform()

    class Scheme(scheme.Default8BitQuantizeScheme):
        def get_layout_transformer(self):
            return LayoutTransform()

    return Scheme()


def build_qat_model(model):
    """The fake-quantised Keras model for ``model`` (float weights copied, ranges untrained).

    Raises:
        QuantizationError: a layer cannot be quantised (named in the message).
    """
    tfmot = require_tfmot()
    annotated = annotate(model)
    with quantize_scope():
        try:
            return tfmot.quantization.keras.quantize_apply(annotated, scheme=_scheme())
        except (RuntimeError, ValueError) as exc:
            raise QuantizationError(f"tfmot cannot quantise the model: {exc}") from None


def _range_variables(wrapper) -> dict[str, tuple]:
    """``kind -> (min variable, max variable)`` of a wrapper's activation quantisers."""
    found: dict[str, dict[str, object]] = {}
    is_input = type(wrapper).__name__ == "QuantizeLayer"  # not exported by tfmot
    for variable in wrapper.weights:
        leaf = variable.name.split("/")[-1].split(":")[0]
        if is_input:  # named after the layer: quantize_layer_3_min
            leaf = "quantize_layer_" + leaf.rsplit("_", 1)[-1]
        for kind in ("output", "post_activation", "pre_activation", "quantize_layer"):
            for end in ("min", "max"):
                if leaf == f"{kind}_{end}":
                    found.setdefault(kind, {})[end] = variable
    return {kind: (pair["min"], pair["max"]) for kind, pair in found.items() if len(pair) == 2}


def calibrate_ranges(qat_model, model, tiles: np.ndarray, batch_size: int = 32) -> int:
    """Start every activation range from the float model's statistics on ``tiles``.

    tfmot starts activation ranges at [-6, 6] and moves them by an exponential moving
    average with decay 0.999, so a short fine-tune would spend most of its steps clipped
    to the wrong range. Each range is set to the mean per-batch minimum and maximum of
    the layer's float output (where the moving average settles), widened to hold 0; the
    input range is pinned to raw grey levels 0..255. Returns how many ranges were set.
    """
    folded = fold_for_int8(model)
    names = [layer.name for layer in folded.layers if not isinstance(layer, layers.InputLayer)]
    probe = keras.Model(folded.inputs, [folded.get_layer(name).output for name in names])
    low = {name: [] for name in names}
    high = {name: [] for name in names}
    for start in range(0, len(tiles), batch_size):
        batch = tiles[start : start + batch_size, ..., None].astype(np.float32)
        for name, value in zip(names, probe(batch, training=False)):
            value = value.numpy()
            low[name].append(float(value.min()))
            high[name].append(float(value.max()))
    count = 0
    for layer in qat_model.layers:
        variables = _range_variables(layer)
        if "quantize_layer" in variables:
            low_var, high_var = variables["quantize_layer"]
            low_var.assign(INPUT_RANGE[0])
            high_var.assign(INPUT_RANGE[1])
            count += 1
        inner = getattr(layer, "layer", None)
        for kind in ("output", "post_activation"):
            if kind in variables and inner is not None and inner.name in low:
                low_var, high_var = variables[kind]
                low_var.assign(min(float(np.min(low[inner.name])), 0.0))
                high_var.assign(max(float(np.max(high[inner.name])), 0.0))
                count += 1
    unify_concat_ranges(qat_model)
    refresh_weight_ranges(qat_model)
    return count


@dataclass(frozen=True)
class FineTuneResult:
    """What QAT fine-tuning did.

    Attributes:
        epochs: epochs trained.
        steps_per_epoch: batches per epoch.
        losses: training loss per epoch.
        val_miou: validation mean IoU after each epoch, index 0 before any training
            (calibrated ranges only); empty without a validation function.
        best_epoch: the epoch whose weights were kept (0: none of the fine-tuning).
        seconds: wall time, validation included.
    """

    epochs: int
    steps_per_epoch: int
    losses: list[float]
    val_miou: list[float]
    best_epoch: int
    seconds: float


def fine_tune(
    qat_model,
    run,
    images: np.ndarray,
    masks: np.ndarray,
    epochs: int,
    learning_rate: float,
    fraction: float = 1.0,
    batch_size: int | None = None,
    calibration: np.ndarray | None = None,
    validate: Callable[[object], float] | None = None,
) -> FineTuneResult:
    """Fine-tune the QAT model with the run's loss, class weights and augmentation.

    With ``validate`` (model -> val mean IoU) the model is scored before training and
    after each epoch, with deployment ranges (:func:`finalize_ranges`), and the best
    weights are kept, as training keeps its best checkpoint: a fine-tune that does not
    help (a run not yet converged, too high a rate) never makes the export worse than the
    calibrated model.

    Args:
        qat_model: from :func:`build_qat_model`, ranges set by :func:`calibrate_ranges`.
        run: the source :class:`~marsedge.train.rundir.RunInfo`.
        images, masks: the run's training split, uint8 ``(N, H, W)``.
        epochs: passes (0 keeps the calibrated model as it is).
        learning_rate: peak AdamW rate, cosine-decayed to 5% over all steps; keep it
            below the run's final rate, the model is only being nudged.
        fraction: share of each epoch's batches to use (quick exports on a small CPU).
        batch_size: tiles per batch; the run's own when None.
        calibration: tiles for :func:`finalize_ranges` before each validation.
        validate: scores a model on the validation split.
    """
    from marsedge.train.augment import make_dataset
    from marsedge.train.losses import make_loss

    config = run.config
    started = time.perf_counter()
    batch_size = batch_size or config.batch_size
    full_steps = max(len(images) // batch_size, 1)
    steps = max(int(math.ceil(full_steps * fraction)), 1)
    scores: list[float] = []
    best_weights, best_epoch = None, 0

    def score(epoch: int) -> None:
        nonlocal best_weights, best_epoch
        if validate is None:
            return
        saved = [(v, v.numpy()) for pair in _all_ranges(qat_model) for v in pair]
        finalize_ranges(qat_model, calibration)
        scores.append(float(validate(qat_model)))
        if scores[-1] >= max(scores):
            best_weights, best_epoch = qat_model.get_weights(), epoch
        for variable, value in saved:  # training continues from the moving averages
            variable.assign(value)
        log.info("QAT after epoch %d: val mIoU %.4f", epoch, scores[-1])

    score(0)
    losses: list[float] = []
    if epochs > 0:
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=epochs * steps, alpha=0.05)
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
        loss = make_loss(config.loss, np.asarray(run.derived["class_weights"], np.float32), config.focal_gamma)
        qat_model.compile(optimizer=optimizer, loss=loss)
    for epoch in range(epochs):
        tick = time.perf_counter()
        # Epoch numbers continue the run's own, so QAT sees fresh shuffles and augmentations.
        dataset = make_dataset(
            images, masks, batch_size, True, config.seed, config.epochs + epoch, config.augment
        ).take(steps)
        history = qat_model.fit(dataset, epochs=1, verbose=0)
        losses.append(float(history.history["loss"][-1]))
        if not math.isfinite(losses[-1]):
            raise QuantizationError(f"QAT fine-tuning diverged at epoch {epoch + 1}; lower --qat-lr")
        log.info(
            "QAT epoch %d/%d: %d steps, loss %.4f, %.0f s",
            epoch + 1,
            epochs,
            steps,
            losses[-1],
            time.perf_counter() - tick,
        )
        score(epoch + 1)
    if best_weights is not None:
        qat_model.set_weights(best_weights)
    finalize_ranges(qat_model, calibration)
    return FineTuneResult(epochs, steps, losses, scores, best_epoch, time.perf_counter() - started)


def _all_ranges(qat_model) -> list[tuple]:
    return [pair for layer in qat_model.layers for pair in _range_variables(layer).values()]


def refresh_weight_ranges(qat_model) -> None:
    """Set every weight quantiser's range from the weights as they are now.

    tfmot's weight quantisers record the weights' range only in a training-mode call and
    start at [-6, 6]; an inference call (and the converter) uses the recorded range. One
    training-mode call on a blank tile records it; activation ranges are put back as they
    were (that call would nudge their moving averages).
    """
    saved = [(v, v.numpy()) for pair in _all_ranges(qat_model) for v in pair]
    shape = [1, *qat_model.input_shape[1:]]
    qat_model(np.zeros(shape, np.float32), training=True)
    for variable, value in saved:
        variable.assign(value)


def finalize_ranges(qat_model, calibration: np.ndarray | None = None) -> None:
    """Set the ranges the int8 model ships with: weight ranges from the final weights,
    input pinned to 0..255, one range per concatenation, and (given calibration tiles)
    the output range narrowed for argmax."""
    refresh_weight_ranges(qat_model)
    pin_input_range(qat_model)
    unify_concat_ranges(qat_model)
    if calibration is not None:
        narrow_output_range(qat_model, calibration)


def _output_range_layer(qat_model):
    """The wrapper whose activation quantiser sets the int8 output tensor's range."""
    layer = qat_model.layers[-1]
    while True:
        variables = _range_variables(layer)
        for kind in ("output", "post_activation"):
            if kind in variables:
                return variables[kind]
        inbound = _inbound(layer)
        if len(inbound) != 1:
            raise QuantizationError(f"cannot find the quantiser of the model output (stopped at {layer.name})")
        layer = inbound[0]


def narrow_output_range(qat_model, tiles: np.ndarray, batch_size: int = 32) -> tuple[float, float]:
    """Fit the int8 output range to the logits that decide the argmax.

    Logits span about [-15, 15], but per pixel the two largest lie in about [-0.5, 5]:
    the rest never win. A range over the top two (and 0, as TFLite requires) makes the
    output step several times finer, so fewer pixels whose two best classes are close
    flip between float and int8. Lower logits saturate at the bottom of the range, which
    changes no argmax. Returns the range set.
    """
    low_var, high_var = _output_range_layer(qat_model)
    top1, top2 = [], []
    for start in range(0, len(tiles), batch_size):
        logits = qat_model(tiles[start : start + batch_size, ..., None].astype(np.float32), training=False).numpy()
        ordered = np.sort(logits, axis=-1)
        top1.append(ordered[..., -1].ravel())
        top2.append(ordered[..., -2].ravel())
    top1, top2 = np.concatenate(top1), np.concatenate(top2)
    low = min(float(np.quantile(top2, 0.001)), float(top1.min()), 0.0)
    high = max(float(top1.max()), 0.0)
    if high - low <= 0:
        return float(low_var.numpy()), float(high_var.numpy())
    low_var.assign(low)
    high_var.assign(high)
    return low, high


def _inbound(layer) -> list:
    inbound = layer._inbound_nodes[0].inbound_layers  # noqa: SLF001 - Keras 2 functional graph
    return inbound if isinstance(inbound, list) else [inbound]


def _through_pass_through(layer):
    """The layer whose range a DepthToSpace wrapper passes on (itself for any other layer)."""
    while isinstance(getattr(layer, "layer", None), DepthToSpace):
        layer = _inbound(layer)[0]
    return layer


def unify_concat_ranges(qat_model) -> int:
    """Give each Concatenate and the layers feeding it one common activation range.

    TFLite's int8 CONCATENATION takes one scale for all its inputs and its output. When
    an input keeps its own range (a skip connection also feeds a max-pool, so tfmot's
    concat rule cannot drop its quantiser) the converter inserts a requantising QUANTIZE
    op. The union of the ranges loses nothing and removes those ops. Returns how many
    groups were unified.
    """
    groups = 0
    for layer in qat_model.layers:
        if not isinstance(getattr(layer, "layer", None), layers.Concatenate):
            continue
        members = [layer, *(_through_pass_through(member) for member in _inbound(layer))]
        pairs = []
        for member in members:
            variables = _range_variables(member)
            for kind in ("output", "post_activation", "quantize_layer"):
                if kind in variables:
                    pairs.append(variables[kind])
        if len(pairs) < 2:
            continue
        low = min(float(np.min(pair[0].numpy())) for pair in pairs)
        high = max(float(np.max(pair[1].numpy())) for pair in pairs)
        for low_var, high_var in pairs:
            low_var.assign(low)
            high_var.assign(high)
        groups += 1
    return groups


def pin_input_range(qat_model) -> None:
    """Reset the input quantiser to raw grey levels 0..255 (step 1: every level exact)."""
    for layer in qat_model.layers:
        variables = _range_variables(layer)
        if "quantize_layer" in variables:
            variables["quantize_layer"][0].assign(INPUT_RANGE[0])
            variables["quantize_layer"][1].assign(INPUT_RANGE[1])


def load_qat_model(model, weights: str):
    """Rebuild the QAT model of a float model and load saved QAT weights into it."""
    qat_model = build_qat_model(model)
    qat_model.load_weights(weights)
    return qat_model
