"""Where candidate work runs: one `Executor.map(fn, items, shared)` over four engines.

- "serial": inline in this process, one item after another.
- "process": a local process pool (default: one worker per core), reused across the map calls of one executor.
- "ray": Ray tasks on a local instance (`ray.init(num_cpus=workers)`) or on a cluster (`address=`); the optional
  `edgeprune[distributed]` extra.
- "thread": a thread pool, for I/O-bound work that waits on something else (the adb device pool); not offered to
  the planner (`EXECUTORS`), whose work is CPU-bound.

`fn` is a module-level function called as `fn(shared, item)`; `shared` (a model and its data, say) travels to each
worker once per map call, not once per item (and not again while later calls pass the same data: it is keyed by the
digest of its pickled bytes). Results come back in item order. An exception raised by `fn` is raised
again in the caller with its own type and message (the worker's traceback is attached as a note); when several items
fail, the first in item order wins.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import shutil
import socket
import tempfile
import threading
import traceback
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from edgeprune._cores import usable_cores
from edgeprune.errors import ConfigError, DeviceError

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

EXECUTORS = ("serial", "process", "ray")
"""The engines `get_executor` offers for planning work (`--executor`)."""
KINDS = (*EXECUTORS, "thread")
"""Every engine `get_executor` builds; "thread" is for I/O-bound device work."""


class Executor(ABC):
    """Runs `fn(shared, item)` for every item somewhere; results in item order. Close it (or use `with`)."""

    kind: str
    workers: int

    @abstractmethod
    def map(self, fn: Callable[[S, T], R], items: Sequence[T], shared: S) -> list[R]:
        """fn(shared, item) for every item, results in item order. fn is a module-level function; `shared` travels
        to each worker once per map call. An exception raised by fn is re-raised here with its own type."""

    def close(self) -> None:
        """Release the workers (idempotent)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, workers={self.workers})"


# --------------------------------------------------------------------------------------- failures across workers


class _Failure:
    """An exception raised by `fn` in a worker, packed so that its type survives the trip back.

    Exceptions whose constructor takes other arguments than the message (MissingDependencyError(module, extra))
    cannot be unpickled the ordinary way; those travel as (class, message, attributes) and are rebuilt without
    calling their constructor."""

    def __init__(self, exc: BaseException):
        self.trace = "".join(traceback.format_exception(exc))
        self.exc: BaseException | None = None
        try:
            if type(pickle.loads(pickle.dumps(exc))) is type(exc):
                self.exc = exc
        except Exception:  # noqa: BLE001 - falls back to the rebuilt form below
            pass
        self.cls = type(exc)
        self.message = str(exc)
        self.attrs = {}
        for key, value in getattr(exc, "__dict__", {}).items():
            try:
                pickle.dumps(value)
            except Exception:  # noqa: BLE001 - an attribute that cannot travel is left behind
                continue
            self.attrs[key] = value

    def __reduce__(self):
        return (_Failure._rebuild, (self.exc, self.cls, self.message, self.attrs, self.trace))

    @staticmethod
    def _rebuild(exc, cls, message, attrs, trace) -> _Failure:
        f = _Failure.__new__(_Failure)
        f.exc, f.cls, f.message, f.attrs, f.trace = exc, cls, message, attrs, trace
        return f

    def error(self) -> BaseException:
        exc = self.exc
        if exc is None:
            exc = self.cls.__new__(self.cls)
            BaseException.__init__(exc, self.message)
            exc.__dict__.update(self.attrs)
        exc.add_note("raised in an executor worker:\n" + self.trace.rstrip())
        return exc


def _call(fn: Callable, shared: Any, item: Any) -> Any:
    """fn(shared, item), with an exception returned as a `_Failure` (it is raised again in the caller)."""
    try:
        return fn(shared, item)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller, typed
        return _Failure(exc)


def _results(values: list[Any]) -> list[Any]:
    for value in values:
        if isinstance(value, _Failure):
            raise value.error()
    return values


def _one_thread() -> None:
    """A worker's torch runs on one thread: the workers themselves are the parallelism (no oversubscription)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return
    torch.set_num_threads(1)


def _pickled(shared: Any, kind: str) -> bytes:
    try:
        return pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise ConfigError(f"the shared data of a {kind} map cannot be pickled ({exc}); pass picklable data, or use "
                          "--executor serial") from None


# -------------------------------------------------------------------------------------------------------- serial


class SerialExecutor(Executor):
    """Inline, in item order, with torch on every usable core (the one worker is all the parallelism there is);
    exceptions propagate untouched."""

    kind = "serial"
    workers = 1

    def map(self, fn, items, shared):
        from edgeprune._torch import torch_threads

        with torch_threads(usable_cores()):
            return [fn(shared, item) for item in items]


# -------------------------------------------------------------------------------------------------------- thread


class ThreadExecutor(Executor):
    """A thread pool, for I/O-bound work such as measuring on adb devices: each worker spends its time waiting on
    a device over a socket, which releases the GIL, so threads run the devices in parallel without copying the
    runner state (adb connections, probed device facts) into other processes. `shared` is passed by reference and
    exceptions propagate untouched. A new pool per map call: device jobs are few and long."""

    kind = "thread"

    def __init__(self, workers: int | None = None, name: str = "edgeprune"):
        self.workers = workers or (os.cpu_count() or 1)
        self.name = name

    def map(self, fn, items, shared):
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(items)), thread_name_prefix=self.name) as pool:
            return list(pool.map(functools.partial(fn, shared), items))  # the first failure in item order raises


# ------------------------------------------------------------------------------------------------------- process

_WORKER_SHARED: dict[str, Any] = {}
"""In a process or Ray worker: {digest: shared} of the data last loaded (the one before is dropped)."""


def _shared_in_worker(token: str, load: Callable[[], Any]) -> Any:
    if token not in _WORKER_SHARED:
        _WORKER_SHARED.clear()
        _WORKER_SHARED[token] = load()
    return _WORKER_SHARED[token]


def _load_file(path: str) -> Any:
    # Written by this user's own edgeprune process into a 0700 folder of its executor (not user input).
    with open(path, "rb") as f:
        return pickle.load(f)


def _process_task(fn: Callable, token: str, path: str | None, item: Any) -> Any:
    shared = None if path is None else _shared_in_worker(token, lambda: _load_file(path))
    return _call(fn, shared, item)


class ProcessExecutor(Executor):
    """A local process pool, one worker per core by default, each with torch on one thread.

    Workers start with the "forkserver" method, not "fork": forking a process whose torch has started its OpenMP
    and inter-op thread pools (every planner has run the model by then) copies locks held by threads that do not
    exist in the child, and a worker can hang on its first parallel op; Python 3.12+ warns about fork in a threaded
    process for the same reason. "forkserver" forks each worker from a clean server process that imports torch once
    (preloaded): measured on a 2-core host, the first pool of a process started in ~1.9 s (the server's import) and
    every later pool in ~0.03 s, where a "spawn" pool took ~2.9 s every time; bench/scale.py reports the start-up.

    `shared` is pickled once per map call into a private temporary file named by the digest of its bytes; each
    worker unpickles it once and keeps it while the digest stays the same, so map calls that pass the same data
    (the planner's chunks of one sensitivity analysis) ship it to each worker once in all."""

    kind = "process"

    def __init__(self, workers: int | None = None, start_method: str = "forkserver"):
        self.workers = workers or usable_cores()
        self.start_method = start_method
        self._pool = None
        self._folder: str | None = None
        self._shared_file: tuple[str, str] | None = None  # (digest, path) of the data the workers hold

    def _executor(self):
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            ctx = mp.get_context(self.start_method)
            if self.start_method == "forkserver":
                ctx.set_forkserver_preload(["torch", "edgeprune.executor"])
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_one_thread)
        return self._pool

    def _ship(self, shared: Any) -> tuple[str, str | None]:
        """(token, file) of `shared` for the workers; the file is rewritten only when the data changed."""
        if shared is None:
            return "", None
        data = _pickled(shared, "process")
        digest = hashlib.sha256(data).hexdigest()
        if self._shared_file is None or self._shared_file[0] != digest:
            if self._folder is None:
                self._folder = tempfile.mkdtemp(prefix="edgeprune-exec-")  # 0700: only this user reads it
            path = str(Path(self._folder) / f"{digest}.pkl")
            with open(path, "wb") as f:
                f.write(data)
            if self._shared_file is not None:
                Path(self._shared_file[1]).unlink(missing_ok=True)
            self._shared_file = (digest, path)
        return self._shared_file

    def map(self, fn, items, shared):
        from concurrent.futures.process import BrokenProcessPool

        if not items:
            return []
        token, path = self._ship(shared)
        pool = self._executor()
        futures = [pool.submit(_process_task, fn, token, path, item) for item in items]
        try:
            values = [f.result() for f in futures]
        except BrokenProcessPool as exc:
            self.close()
            raise DeviceError(f"a worker of the process pool ({self.workers} workers) died ({exc}); it may have "
                              "run out of memory (use fewer --workers, or --executor serial), or a script calling "
                              "edgeprune lacks `if __name__ == \"__main__\":` around its top-level code") from None
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            for f in futures:
                f.cancel()
            if isinstance(exc, pickle.PicklingError) or "pickle" in str(exc):
                raise ConfigError(f"function {getattr(fn, '__qualname__', fn)!r} or its items or results cannot "
                                  f"travel to process workers ({exc}); use a module-level function and picklable "
                                  "data, or --executor serial") from None
            raise
        return _results(values)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
            self._shared_file = None


# ----------------------------------------------------------------------------------------------------------- ray

_RAY_LOCK = threading.Lock()


def _ray_task(fn: Callable, token: str, shared_ref: list, item: Any) -> Any:
    """Body of the Ray remote function: `shared_ref` is a one-element list so that Ray hands over the reference
    unresolved and each worker fetches the object once (per distinct shared data)."""
    import ray

    _one_thread()
    shared = None if shared_ref[0] is None else _shared_in_worker(token, lambda: ray.get(shared_ref[0]))
    return _call(fn, shared, item)


def _check_address(address: str) -> None:
    """Fail fast (one line, no 60 s of retries) when a host:port or ray://host:port address does not answer."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray-address '{address}' is not HOST:PORT, ray://HOST:PORT or 'auto'; give the address "
                          "`ray start --head` printed")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5.0):
            pass
    except OSError as exc:
        raise DeviceError(f"no Ray cluster answers at --ray-address '{address}' ({exc.strerror or exc}); start one "
                          "with `ray start --head` there, or drop --ray-address to run on a local instance") from None


class RayExecutor(Executor):
    """Ray tasks. With `address`: the cluster there (`ray.init(address=...)`; edgeprune and the user's model code
    must be importable on its nodes); without: a local instance with `workers` CPUs (default: every core). An
    instance already running in this process is used as it is. `close()` shuts down only an instance this executor
    started. `shared` goes into the object store once per map call (`ray.put`), and not again while later calls pass
    the same data."""

    kind = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None):
        from edgeprune._deps import require

        self._ray = ray = require("ray", extra="distributed")
        self.address = address
        self._owns = False
        if address is not None:
            _check_address(address)
        with _RAY_LOCK:
            if not ray.is_initialized():
                if address is not None:
                    try:
                        ray.init(address=address, include_dashboard=False, logging_level="WARNING",
                                 log_to_driver=False)
                    except (ConnectionError, RuntimeError, ValueError) as exc:
                        raise DeviceError(f"cannot join the Ray cluster at --ray-address '{address}': "
                                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}; check "
                                          "`ray status` there") from None
                else:
                    import sys

                    # local workers import what this process imports (fn's module may live outside site-packages)
                    path = os.pathsep.join(p for p in sys.path if p)
                    ray.init(num_cpus=workers or (os.cpu_count() or 1), include_dashboard=False,
                             logging_level="WARNING", log_to_driver=False,
                             runtime_env={"env_vars": {"PYTHONPATH": path}})
                self._owns = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = workers or cpus
        self._window = workers  # at most this many tasks in flight when asked for (a shared cluster)
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
        self._shared: tuple[str, Any] | None = None  # (digest, object ref) of the data last put

    def map(self, fn, items, shared):
        ray = self._ray
        if not items:
            return []
        ref, token = None, ""
        if shared is not None:
            digest = hashlib.sha256(_pickled(shared, "ray")).hexdigest()
            if self._shared is None or self._shared[0] != digest:
                self._shared = (digest, ray.put(shared))
            token, ref = self._shared
        refs: list = []
        pending: list = []
        for item in items:
            if self._window is not None and len(pending) >= self._window:
                _, pending = ray.wait(pending, num_returns=1)
            r = self._remote.remote(fn, token, [ref], item)
            refs.append(r)
            pending.append(r)
        try:
            values = ray.get(refs)
        except ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DeviceError(f"a Ray task failed outside the planner's code ({type(exc).__name__}: {first}); check "
                              "the cluster (`ray status`), or use --executor process") from None
        return _results(values)

    def close(self) -> None:
        self._shared = None
        if self._owns:
            self._ray.shutdown()
            self._owns = False


# ------------------------------------------------------------------------------------------------------- factory


def get_executor(kind: str = "process", workers: int | None = None, address: str | None = None) -> Executor:
    """The executor named `kind` ("serial", "process", "ray"; "thread" for I/O-bound device work) with `workers`
    workers (None: one per core) and, for Ray, the cluster `address` (None: a local instance)."""
    if kind not in KINDS:
        raise ConfigError(f"--executor '{kind}' is unknown; choose one of: {', '.join(EXECUTORS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers {workers!r} must be a whole number >= 1 (or left out: one per core)")
    if address is not None and kind != "ray":
        raise ConfigError(f"--ray-address '{address}' needs --executor ray (got --executor {kind}); add --executor "
                          "ray or drop --ray-address")
    if address is not None and not address.strip():
        raise ConfigError(f"--ray-address '{address}' is empty; give HOST:PORT of the cluster's head, or drop it")
    if kind == "serial":
        if workers not in (None, 1):
            raise ConfigError(f"--workers {workers} with --executor serial: serial runs one item at a time; use "
                              "--executor process for several workers")
        return SerialExecutor()
    if kind == "thread":
        return ThreadExecutor(workers)
    if kind == "process":
        return ProcessExecutor(workers)
    return RayExecutor(workers, address)


__all__ = ["EXECUTORS", "Executor", "get_executor", "ProcessExecutor", "RayExecutor", "SerialExecutor",
           "ThreadExecutor"]
