"""What every part of marsedge shares: the class table (:mod:`.classes`), the model
metadata schema (:mod:`.metadata`), the IoU and confusion maths (:mod:`.metrics`),
atomic file writes (:mod:`.atomic`) and error messages (:mod:`.errors`).

Imports only the standard library and numpy, so the edge runtime may use it.
"""
