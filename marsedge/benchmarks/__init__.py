"""``marsedge bench``: accuracy, latency, memory and per-op cost of every export of a run.

Modules: :mod:`.bench` (the measurement), :mod:`.report` (Markdown, JSON, plot,
BENCHMARKS.md), :mod:`.peak` (the machine's measured GEMM peak), :mod:`.rss` (peak memory
of a separate runtime process), :mod:`.ops` (MACs per op and per-op timing of a .tflite).

Importing this package is cheap: nothing here imports TensorFlow, and the child
processes of :mod:`.peak` and :mod:`.rss` import only numpy and the edge runtime.
"""
