"""``marsedge bench``: accuracy, latency, memory and per-op cost of every export of a run.

Modules, in the order a benchmark uses them: :mod:`.settings` (what is measured, parsed
options), :mod:`.sources` (the models named and the labelled tiles they are scored on),
:mod:`.machine` (what ran it), :mod:`.peak` (the machine's measured float32 GEMM peak),
:mod:`.timing` (one model through the runtime at one thread count), :mod:`.rss` (peak
memory of a separate runtime process), :mod:`.records` (the JSON record of each model
and the checks), :mod:`.bench` (:func:`~.bench.run_bench`, which puts them together),
:mod:`.report` (Markdown, JSON, plot, BENCHMARKS.md), :mod:`.ops` (MACs per op and per-op
timing of a .tflite), :mod:`.frames` (whole frames of several sizes).

Importing this package is cheap: nothing here imports TensorFlow, and the child
processes of :mod:`.peak` and :mod:`.rss` import only numpy and the edge runtime.
"""
