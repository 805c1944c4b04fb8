"""Where the independent tasks of a run go: this process one after another, local worker processes, or Ray.

Sweeps (:mod:`sunsim.analysis.sweep_points`) and runs share the plumbing here: worker processes that die
with the parent however it ends, and a Ray address probed before use. Results come
back in the order of the tasks, whatever order they finish in, so the caller's merge never depends on
scheduling.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from sunsim.analysis.options import RUN_EXECUTORS
from sunsim.analysis.sweep_spec import RAY_PROBE_TIMEOUT_S
from sunsim.errors import InputError


def map_tasks(fn: Callable[..., Any], jobs: list[tuple], executor: str = "inline", workers: int | None = None,
              address: str | None = None) -> list[Any]:
    """``[fn(*job) for job in jobs]`` on ``executor`` (``fn`` must be importable, its arguments picklable)."""
    if executor not in RUN_EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(RUN_EXECUTORS)}, got {executor!r}")
    if address and executor != "ray":
        raise InputError("--address names a Ray cluster; it needs --executor ray")
    if executor == "inline":
        return [fn(*job) for job in jobs]
    if executor == "local":
        return _local(fn, jobs, workers or os.cpu_count() or 1)
    return _ray(fn, jobs, address)


def _local(fn: Callable[..., Any], jobs: list[tuple], workers: int) -> list[Any]:
    pool = ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))), initializer=worker_init,
                               initargs=(os.getpid(),))
    finished = False
    try:
        futures = [pool.submit(fn, *job) for job in jobs]
        out = [f.result() for f in futures]
        finished = True
        return out
    finally:
        if not finished:  # a task failed or we were interrupted: stop the others now
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def worker_init(parent: int) -> None:
    """Make a worker process die with the sweep, however the sweep ends.

    On Linux the kernel kills the worker when its parent dies (``PR_SET_PDEATHSIG``); everywhere a
    watchdog thread exits when the parent id changes (the worker was re-parented). SIGTERM gets its
    default action back (the parent's handler turns it into an exception, which a worker must not catch).
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="sunsim-parent-watch").start()


def _watch_parent(parent: int, every_s: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def probe_address(address: str, timeout_s: float = RAY_PROBE_TIMEOUT_S) -> None:
    """Fail within seconds, naming the address, when nothing answers at a Ray cluster address.

    ``ray.init`` would otherwise retry for minutes. ``auto``/``local`` (Ray finds or starts a cluster)
    are left to Ray.
    """
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address: {address!r} is not HOST:PORT (or ray://HOST:PORT, auto, local)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise InputError(f"--address: no Ray cluster answers at {address!r} ({reason} within "
                         f"{timeout_s:g} s)") from None


@contextmanager
def ray_connection(address: str | None) -> Iterator[Any]:
    """The ``ray`` module, connected to ``address`` (default: a local cluster, started and shut down here)."""
    from sunsim.scenario import ScenarioError

    if address:
        probe_address(address)
    try:
        import ray
    except ImportError:
        raise ScenarioError("--executor ray needs Ray: pip install 'sunsim[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
            raise InputError(f"--address: Ray could not connect to {address or 'a local cluster'!r}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _ray(fn: Callable[..., Any], jobs: list[tuple], address: str | None) -> list[Any]:
    with ray_connection(address) as ray:
        remote = ray.remote(fn)
        return ray.get([remote.remote(*job) for job in jobs])
