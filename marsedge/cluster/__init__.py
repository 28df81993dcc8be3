"""Scale-out on Ray (the ``[cluster]`` extra: ``pip install -e '.[cluster]'`` in the repository).

:mod:`.batch` segments a mission archive with a pool of Ray actors, each holding one
edge-runtime :class:`~marsedge.edge_runtime.Segmenter`, and :mod:`.train` runs
``marsedge train`` on several Ray Train workers. The per-frame and per-epoch work is the
single-machine code (``marsedge-run``'s :func:`~marsedge.edge_runtime.batch.segment_file`,
``marsedge train``'s trainer): Ray only spreads it over processes and machines.

Ray is imported lazily, so ``import marsedge.cluster`` works without the extra; the
first function that needs Ray raises :class:`~marsedge.errors.MissingExtraError` (one
line naming the install command) when it is missing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from marsedge.core.native_stderr import native_stderr_to_log
from marsedge.errors import MarsEdgeError, MissingExtraError

log = logging.getLogger(__name__)

LOCAL = "local"
AUTO = "auto"


def require_ray(what: str = "this command") -> Any:
    """The ``ray`` module, or :class:`MissingExtraError` naming how to install the cluster extra."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError("cluster", what, exc.name or "ray") from None
    return ray


def connect(address: str | None, num_cpus: int | None = None, what: str = "this command") -> Any:
    """Joins the Ray instance at ``address`` (``ray://host:10001``, ``host:6379``, ``auto``
    for the one ``ray start --head`` started on this machine) or, for ``local`` / None
    (and no ``RAY_ADDRESS``), starts one in this process with ``num_cpus`` CPUs (default:
    every core). Reuses an instance this process already joined. Returns the ``ray`` module.

    Raises:
        MissingExtraError: Ray is not installed.
        MarsEdgeError: the instance cannot be reached or started.
    """
    ray = require_ray(what)
    if ray.is_initialized():
        return ray
    verbose = _verbose()
    settings: dict[str, Any] = {"logging_level": logging.INFO if verbose else logging.ERROR, "log_to_driver": verbose}
    if not verbose:  # Ray's C++ core logs (core_worker.cc ...) go to its log files, not stderr
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        quiet_ray_loggers()
    if address in (None, "", LOCAL):
        if address is None and os.environ.get("RAY_ADDRESS"):
            target: str | None = os.environ["RAY_ADDRESS"]
        else:
            target = LOCAL  # a new instance, even if `ray start` runs one on this machine
            settings.update(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False)
    else:
        target = address
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        with native_stderr_to_log(log, "Ray", enabled=not verbose):  # "Set ray log level from ..."
            ray.init(address=target, **settings)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = f"the Ray instance at {target}" if target != LOCAL else "a local Ray instance"
        hint = ""
        if target not in (LOCAL, AUTO) and "RAY_AUTH_MODE" not in os.environ:
            # Ray enables token authentication for an explicit address only when asked to
            hint = " (an instance with token authentication also needs RAY_AUTH_MODE=token and its token)"
        raise MarsEdgeError(f"cannot reach {where}: {' '.join(str(exc).split())[:300]}{hint}") from None
    quiet_ray_loggers()
    return ray


RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")


def _verbose() -> bool:
    return os.environ.get("MARSEDGE_VERBOSE") == "1"


def quiet_ray_loggers() -> None:
    """Ray's own log lines (the token-authentication notice, "Progress bars disabled", ...)
    only with --verbose; marsedge reports failures itself. Call it again after importing a
    Ray library that sets its logger's level on import (Ray Data does)."""
    level = logging.INFO if _verbose() else logging.CRITICAL
    for name in RAY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def cluster_cpus(ray: Any) -> int:
    """CPUs of the Ray instance this process joined (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def sizing(cpus: int, workers: int | None, threads: int | None) -> tuple[int, int]:
    """``(workers, threads)`` so that workers x threads = ``cpus`` when one or both are
    not given: neither gives one thread per worker and a worker per CPU; one given
    divides the CPUs by it (at least 1 each)."""
    if workers is None and threads is None:
        return cpus, 1
    if workers is None:
        return max(1, cpus // threads), threads
    if threads is None:
        return workers, max(1, cpus // workers)
    return workers, threads
