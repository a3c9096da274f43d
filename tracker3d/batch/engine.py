"""Run independent tasks on an engine: in this process (`serial`), in local worker processes
(`local`, the default: no extra dependency) or on Ray (`ray`: a local Ray instance, or a cluster
by address). Results come back as each task finishes; a failed task is reported with its
one-line error and never stops the others."""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

from ..errors import Tracker3DError

log = logging.getLogger(__name__)

ENGINES = ("local", "serial", "ray")


@dataclass(frozen=True)
class EngineSpec:
    """kind: local | serial | ray; workers: processes (local) or CPUs of a local Ray instance;
    address: a Ray cluster (`auto`, `ray://host:10001`, `host:6379`); None starts Ray locally."""
    kind: str = "local"
    workers: Optional[int] = None
    address: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in ENGINES:
            raise Tracker3DError(f"--engine {self.kind!r}: expected one of {', '.join(ENGINES)}")
        if self.workers is not None and self.workers < 1:
            raise Tracker3DError(f"--workers {self.workers}: expected at least 1")
        if self.address and self.kind != "ray":
            raise Tracker3DError("--address needs --engine ray")

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass
class TaskOutcome:
    index: int
    ok: bool
    value: Any = None
    error: str = ""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[-1] if "\n" in text else text


def _serial(fn: Callable, payloads: Sequence) -> Iterator[TaskOutcome]:
    for i, p in enumerate(payloads):
        try:
            yield TaskOutcome(i, True, fn(p))
        except Exception as e:  # one task's failure never stops the others
            yield TaskOutcome(i, False, error=_one_line(e))


def _worker_init() -> None:
    """Workers leave Ctrl-C to the parent, which stops them (a half-done task leaves no result)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _local(fn: Callable, payloads: Sequence, workers: int) -> Iterator[TaskOutcome]:
    """A process pool (spawn: no state inherited from this process). A worker that dies (a crash
    in native code, the OOM killer) breaks the pool: the tasks it held are retried once in a new
    pool, and fail if they break it again. Ctrl-C, SIGTERM or an abandoned iteration stop the
    workers at once."""
    pending = list(range(len(payloads)))
    tries = dict.fromkeys(pending, 0)
    ctx = mp.get_context("spawn")
    while pending:
        broken: list[int] = []
        ex = ProcessPoolExecutor(min(workers, len(pending)), mp_context=ctx, initializer=_worker_init)
        try:
            futures = {ex.submit(fn, payloads[i]): i for i in pending}
            pending = []
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = futures.pop(fut)
                    try:
                        value = fut.result()
                    except BrokenProcessPool:
                        broken.append(i)
                        continue
                    except Exception as e:
                        yield TaskOutcome(i, False, error=_one_line(e))
                        continue
                    yield TaskOutcome(i, True, value)
        except BaseException:
            for proc in list(getattr(ex, "_processes", {}).values()):
                proc.terminate()
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
        for i in broken:
            tries[i] += 1
            if tries[i] > 1:
                yield TaskOutcome(i, False, error="its worker process died twice (crash or out of memory)")
            else:
                log.warning("a worker process died; task %d is retried in a new pool", i)
                pending.append(i)


def _ray(fn: Callable, payloads: Sequence, spec: EngineSpec) -> Iterator[TaskOutcome]:
    try:
        import ray
    except ImportError:
        raise Tracker3DError("--engine ray needs Ray: pip install 'tracker3d[cluster]' (or pip install ray)") from None
    started = not ray.is_initialized()
    if started:
        try:
            if spec.address:
                ray.init(address=spec.address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                ray.init(num_cpus=spec.n_workers, include_dashboard=False, logging_level=logging.WARNING,
                         log_to_driver=False)
        except Exception as e:  # ConnectionError, timeouts: one line, not a Ray traceback
            where = spec.address or "a local Ray instance"
            raise Tracker3DError(f"--engine ray: cannot start or reach {where}: {_one_line(e)}") from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=1)(fn)
        refs = {remote.remote(p): i for i, p in enumerate(payloads)}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                i = refs.pop(ref)
                try:
                    yield TaskOutcome(i, True, ray.get(ref))
                except Exception as e:
                    cause = getattr(e, "cause", None)
                    yield TaskOutcome(i, False, error=_one_line(cause if cause is not None else e))
    finally:
        if started:
            ray.shutdown()


def run_tasks(fn: Callable[[Any], Any], payloads: Sequence, spec: EngineSpec) -> Iterator[TaskOutcome]:
    """Run fn(payload) for every payload on the engine; yields outcomes as tasks finish (not in
    order). fn must be a module-level function and payloads picklable (they cross processes)."""
    if not payloads:
        return iter(())
    if spec.kind == "serial":
        return _serial(fn, payloads)
    if spec.kind == "local":
        return _local(fn, payloads, spec.n_workers)
    return _ray(fn, payloads, spec)


def add_engine_args(p, workers_aliases: tuple[str, ...] = ()) -> None:
    """--engine, --workers, --address: shared by every command that fans work out."""
    g = p.add_argument_group("engine")
    g.add_argument("--engine", default="local", choices=ENGINES,
                   help="local worker processes (default), serial (this process), or ray")
    g.add_argument("--workers", *workers_aliases, dest="workers", type=int,
                   help="processes (local) or CPUs of a local Ray instance (default: all cores)")
    g.add_argument("--address", help="Ray cluster to use with --engine ray: auto, ray://HOST:10001 or HOST:6379 "
                   "(default: start Ray on this machine)")


def engine_from_args(args) -> EngineSpec:
    return EngineSpec(args.engine, args.workers, args.address)
