"""What ``marsedge bench`` measures: its settings, their parsing and its error type."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass

from marsedge.errors import MarsEdgeError

SCHEMA = "marsedge-bench/1"
FORMAT_ORDER = ("keras", "float32", "float16", "dynamic", "int8-ptq", "int8-qat")
INT8_FORMATS = ("int8-ptq", "int8-qat")
SPLITS = ("train", "val", "test", "all")
EXPORT_DIR = "export"

Progress = Callable[[int, int, str], None]


class BenchError(MarsEdgeError):
    """Bad benchmark input: no models, no labelled tiles, a file that is not a model."""


DEFAULT_SPLIT = "val"


@dataclass(frozen=True)
class BenchSettings:
    """What ``marsedge bench`` measures; the CLI maps its options onto these one to one.

    Attributes:
        sources: run directories, export folders or .tflite files.
        data: labelled tiles (AN2DL .npz or PNG folder); with a run, replaces the run's
            data file (the run's split indices still apply).
        default_data: the tiles scored when neither a run nor ``data`` names any (the
            CLI passes ``$MARSEDGE_DATA`` or the shared data file when present).
        split: the split to score: "val" or "test" ("train" and "all" allowed, and
            labelled as scores on training tiles). None: a run's "val"; for .tflite files
            that carry their split recipe (``marsedge export`` writes it; the bundled
            models have it) and ``data`` their training file, their "test" split; other
            files score every tile of ``data``, labelled as possibly seen in training.
            Naming a split the models do not know is an error.
        tiles: score at most this many tiles, evenly spaced over the split; 0 = all.
        threads: interpreter thread counts to time.
        runs: timed single-tile inferences per model and thread count.
        warmup: untimed single-tile inferences before them.
        frame_size: (height, width) of the full frame timed through the Segmenter's tiling.
        frame_runs: timed full frames per model and thread count (after one untimed);
            0 skips frames.
        keras: also score the run's Keras float model (needs the [train] extra).
        rss: measure the peak memory of a separate runtime process per model.
        peak: measure the machine's GEMM peak per thread count.
        reference_kernels: run the builtin reference kernels instead of XNNPACK (slow;
            for correctness under an emulator, where XNNPACK does not run).
        tta: also measure every .tflite with test-time flip averaging (the runtime's
            ``--tta``: each tile and its mirror image, logits averaged), as a row of its own.
        corruption_frames: also run the corruption benchmark (:mod:`marsedge.benchmarks.corruptions`)
            on this many whole labelled test frames, spread over the split; 0 skips it.
        frames_data: the AI4Mars-layout folder of labelled frames it reads.
    """

    sources: tuple[str, ...]
    data: str | None = None
    default_data: str | None = None  # the data file used when neither a run nor ``data`` names one
    split: str | None = None
    tiles: int = 0
    threads: tuple[int, ...] = (1, 2)
    runs: int = 50
    warmup: int = 5
    frame_size: tuple[int, int] = (1024, 1024)
    frame_runs: int = 3
    keras: bool = True
    rss: bool = True
    peak: bool = True
    reference_kernels: bool = False
    tta: bool = False
    corruption_frames: int = 0
    frames_data: str | None = None

    @property
    def run_split(self) -> str:
        """The split scored when a run is given (``split``, or val)."""
        return self.split or DEFAULT_SPLIT

    def command(self) -> str:
        """The ``marsedge bench`` command line that measures exactly this."""
        args = ["marsedge", "bench", *self.sources]
        if self.data:
            args += ["--data", self.data]
        args += ["--split", self.split] if self.split else []
        args += [
            "--tiles",
            str(self.tiles),
            "--threads",
            ",".join(map(str, self.threads)),
            "--runs",
            str(self.runs),
            "--warmup",
            str(self.warmup),
            "--frame-size",
            f"{self.frame_size[0]}x{self.frame_size[1]}",
            "--frame-runs",
            str(self.frame_runs),
        ]
        args += [] if self.keras else ["--no-keras"]
        args += [] if self.rss else ["--no-rss"]
        args += [] if self.peak else ["--no-peak"]
        args += ["--reference-kernels"] if self.reference_kernels else []
        args += ["--tta"] if self.tta else []
        args += ["--corruption-frames", str(self.corruption_frames)] if self.corruption_frames else []
        args += ["--frames-data", self.frames_data] if self.corruption_frames and self.frames_data else []
        return shlex.join(args)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("give at least one run directory or .tflite file")
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if not self.threads or any(t < 1 for t in self.threads):
            raise ValueError(f"thread counts must be 1 or more, got {list(self.threads)}")
        for name in ("tiles", "warmup", "frame_runs", "corruption_frames"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.runs < 1:
            raise ValueError(f"runs must be 1 or more, got {self.runs}")
        if len(self.frame_size) != 2 or min(self.frame_size) < 1:
            raise ValueError(f"frame size must be two positive numbers, got {self.frame_size}")


def parse_threads(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> ``(1, 2, 4)``.

    Raises:
        ValueError: not a comma-separated list of positive integers.
    """
    try:
        values = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise ValueError(f"threads must be a comma-separated list of numbers like 1,2,4, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"threads must be positive numbers like 1,2,4, got {text!r}")
    return values


def parse_size(text: str) -> tuple[int, int]:
    """``"1024x768"`` (height x width) -> ``(1024, 768)``.

    Raises:
        ValueError: not ``HxW`` with positive integers.
    """
    parts = text.lower().replace("×", "x").split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"frame size must be HEIGHTxWIDTH like 1024x1024, got {text!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {text!r}")
    return height, width
