"""The learned gate's device check, made to run once on a lent GPU machine (and on the CPU alone).

Per-frame cost of the gate before (an older checkout's code, `--before DIR` holding its
persistence/ and tracker3d/bench/) and now, on one CPU thread and on the GPU (CUDA graphs with the
fused Triton step, and with the torch step beside; eager torch with --eager), the device
`--gate-device auto` picks per track count, and the largest score difference between the GPU and
the CPU gate on the same frames.

    python -m tracker3d.bench.gate_device --out DIR [--before DIR] [--quick] [--eager]

Writes DIR/gate_gpu_last.json and prints a table (this is a script: it prints).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .gate_speed import auto_picks, gate_speed

CPU_COUNTS = (10, 50, 200, 1000)
GPU_COUNTS = (10, 50, 200, 1000, 5000)


def _in_tree(root: str, code: str, timeout: float = 600):
    """Run `code` (Python that prints JSON on its last line) in a fresh process importing the
    code in `root` (persistence/, tracker3d/): -> the JSON."""
    out = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, '.'); " + code], cwd=root,
                         capture_output=True, text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=root))
    if out.returncode:
        raise RuntimeError(f"run in {root} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _before_rows(before: str, jobs: list[tuple[int, str]], frames: int) -> list[dict]:
    """gate_speed rows from the code in `before` (its own gate_speed), in a fresh process."""
    return _in_tree(before, "import json; from tracker3d.bench.gate_speed import gate_speed; "
                    f"print(json.dumps([gate_speed(n, d, frames={frames}) for n, d in {jobs!r}]))")


# Ops of one padded step of CudaGraphStep (eager, graphs=False), counted the same way in any
# checkout that has it: on the CPU the aten ops that reach the dispatcher (views and eval-mode
# dropout, which launch nothing, left out); on a GPU also the CUDA kernels and copies the
# profiler records. The step's host work (packing) and its copies in and out are included.
_COUNT_CODE = """
import collections, json
import numpy as np, torch
from torch.utils._python_dispatch import TorchDispatchMode
from persistence import checkpoint
from persistence.steppers import CudaGraphStep
NOOP = {"view", "_unsafe_view", "permute", "select", "slice", "unsqueeze", "squeeze", "expand", "t", "transpose",
        "as_strided", "alias", "detach", "reshape", "_reshape_alias", "split", "unbind", "narrow", "dropout",
        "lift_fresh", "resolve_conj", "resolve_neg", "empty", "empty_like"}
class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.c = collections.Counter()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in NOOP:
            self.c[name] += 1
        return func(*args, **(kwargs or {}))
model, _ = checkpoint.load(None)
res = {}
rng = np.random.default_rng(0)
for dev in DEVICES:
    st = CudaGraphStep(model, dev, 1024, graphs=False, **KW)
    n = N
    args = (rng.normal(0, 0.5, (n, model.config.n_features)).astype(np.float32),
            rng.uniform(0, 3, n).astype(np.float32), np.arange(n, dtype=np.int64), rng.integers(0, 200, n))
    st.step(*args)
    with torch.inference_mode(), Count() as c:
        st.step(*args)
    row = {"aten_ops": sum(c.c.values()), "aten_by_name": dict(c.c.most_common())}
    if dev == "cuda":
        from torch.profiler import ProfilerActivity, profile
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            st.step(*args)
            torch.cuda.synchronize()
        names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        kernels = [k for k in names if not k.lower().startswith(("memcpy", "memset"))]
        row.update(cuda_kernels=len(kernels), cuda_copies=len(names) - len(kernels),
                   kernel_names=dict(collections.Counter(k[:60] for k in kernels).most_common()))
    res[dev] = row
print(json.dumps(res))
"""


def _op_counts(root: str, n: int = 200, fused: Optional[bool] = None) -> dict:
    """_COUNT_CODE run in the checkout at `root` (n tracks; 'cpu', and 'cuda' when there is one;
    fused: CudaGraphStep's fused argument, None for a checkout without it)."""
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    kw = {} if fused is None else {"fused": fused}
    return _in_tree(root, f"DEVICES = {devices!r}; N = {n}; KW = {kw!r}\n" + _COUNT_CODE, timeout=300)


def _max_score_diff(n: int, frames: int) -> float:
    a, b = [], []
    gate_speed(n, "cpu", frames=frames, scores=a)
    gate_speed(n, "cuda", frames=frames, scores=b)
    return float(max(np.abs(x - y).max() for x, y in zip(a, b)))


def _numpy_vs_torch(counts=(16, 64, 128, 256, 512, 1024)) -> dict:
    """ms of one CPU step (one thread) with numpy and with torch, per track count."""
    import torch

    from persistence import checkpoint
    from persistence.steppers import CpuStep, time_step

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, _ = checkpoint.load(None)
        np_step, torch_step = CpuStep(model, 1024, numpy_max=10 ** 9), CpuStep(model, 1024, numpy_max=0)
        return {n: {"numpy": time_step(np_step, n, 15) * 1e3, "torch": time_step(torch_step, n, 15) * 1e3}
                for n in counts}
    finally:
        torch.set_num_threads(threads)


def _host_ms(n: int, frames: int = 60) -> float:
    """ms per frame of the gate's own work around the model step (features, bookkeeping): the
    step replaced by a constant (no latch: every track is scored each frame)."""
    from persistence.filter import TrackPersistenceFilter

    from .gate_speed import _histories

    g = TrackPersistenceFilter(device="cpu", image_size=(640, 480), latch_s=0.0)
    g._step.step = lambda f, a, s, p: np.zeros(len(s))
    hist, ids, ts = _histories(n, 64 + frames), np.arange(n), []
    for k in range(1, 65 + frames):
        c = time.perf_counter()
        g(ids, hist, np.full(n, k))
        if k > 64:
            ts.append(time.perf_counter() - c)
    return float(np.median(ts) * 1e3)


def _try(res: dict, what: str, fn):
    """fn() or None, with its error kept in res["errors"] (one failed part leaves the others)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001  (a device check reports every failure and goes on)
        import traceback

        res.setdefault("errors", []).append(f"{what}: {type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}")
        return None


def _add(res: dict, row, **extra) -> None:
    if row is not None:
        res["rows"].append(dict(row, **extra))


ROOT = str(Path(__file__).resolve().parents[2])  # this checkout (persistence/, tracker3d/)


def run(before: str | None, quick: bool, reps: int, out: Optional[Path] = None, eager: bool = False) -> dict:
    """All parts, each failing on its own; with `out`, the JSON is rewritten after each part
    (a run stopped by a time limit keeps what it measured)."""
    import torch

    frames = 20 if quick else 100
    cuda = torch.cuda.is_available()
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name(0) if cuda else None, "cpu_cores": os.cpu_count(),
                 "frames": frames, "reps": reps, "rows": []}

    def dump() -> None:
        if out is not None:
            _write(res, out)

    res["op_counts"] = {"now": _try(res, "op counts now", lambda: _op_counts(ROOT)),
                        "now torch step": _try(res, "op counts torch step", lambda: _op_counts(ROOT, fused=False))}
    if before:
        res["op_counts"]["before"] = _try(res, "op counts before", lambda: _op_counts(before))
    dump()
    cpu_counts = CPU_COUNTS[:2] if quick else CPU_COUNTS
    gpu_counts = GPU_COUNTS[:2] if quick else GPU_COUNTS
    for rep in range(reps):  # before and now interleaved, per repetition
        if before:
            jobs = [(n, "cpu") for n in cpu_counts] + ([(n, "cuda") for n in gpu_counts] if cuda else [])
            for r in _try(res, "before", lambda: _before_rows(before, jobs, frames)) or []:
                _add(res, r, version="before", rep=rep)
        for n in cpu_counts:
            _add(res, _try(res, f"cpu {n}", lambda: gate_speed(n, "cpu", frames=frames)), version="now", rep=rep)
        if cuda:
            for n in gpu_counts:
                _add(res, _try(res, f"cuda {n}", lambda: gate_speed(n, "cuda", frames=frames)), version="now", rep=rep)
                _add(res, _try(res, f"cuda torch step {n}", lambda: gate_speed(n, "cuda", frames=frames, fused=False)),
                     version="now", rep=rep)
                if eager:
                    _add(res, _try(res, f"cuda eager {n}",
                                   lambda: gate_speed(n, "cuda", frames=frames, cuda_graphs=False)),
                         version="now eager", rep=rep)
        res["summary"] = summary(res)
        dump()
    if cuda:
        res["max_score_diff_gpu_vs_cpu"] = {n: _try(res, f"diff {n}", lambda: _max_score_diff(n, 30))
                                            for n in ((10, 200) if quick else (10, 200, 1000))}
    host_counts = sorted(set(cpu_counts) | set(gpu_counts))
    res["host_ms"] = {n: _try(res, f"host {n}", lambda: _host_ms(n)) for n in host_counts}
    if before:
        res["host_ms_before"] = _try(res, "host before", lambda: dict(zip(host_counts, _in_tree(
            before, f"import json; from tracker3d.bench.gate_device import _host_ms; "
                    f"print(json.dumps([_host_ms(n) for n in {host_counts!r}]))"))))
    dump()
    res["numpy_vs_torch_step_ms"] = _try(res, "numpy vs torch", _numpy_vs_torch)
    log = logging.getLogger("persistence.filter")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda rec: seen.append(rec.getMessage())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    res["auto_pick"] = _try(res, "auto", lambda: auto_picks(host_counts))
    res["auto_log"] = seen
    log.removeHandler(handler)
    dump()
    return res


def _write(res: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "gate_gpu_last.json.tmp"
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    tmp.replace(out / "gate_gpu_last.json")


def summary(res: dict) -> list[dict]:
    """One row per (tracks, device, version): medians over repetitions."""
    groups: dict = {}
    for r in res["rows"]:
        d = r["device"]
        dev = ("cpu 1 thread" if d.startswith("cpu") else "gpu eager" if "graphs" not in d
               else "gpu fused" if "fused" in d else "gpu graphs")
        groups.setdefault((r["tracks"], dev, r["version"]), []).append(r)
    out = []
    for (n, dev, ver), rs in sorted(groups.items()):
        out.append({"tracks": n, "device": dev, "version": ver,
                    "ms_median": float(np.median([r["ms_median"] for r in rs])),
                    "ms_p99": float(np.median([r["ms_p99"] for r in rs])),
                    "full_pass_ms": float(np.median([r["full_pass_ms"] for r in rs])),
                    "reps_ms": [round(r["ms_median"], 3) for r in rs]})
    return out


def format_summary(rows: list[dict]) -> str:
    lines = [f"{'tracks':>6s} {'device':>13s} {'version':>10s} {'ms median':>10s} {'p99':>7s} {'full pass':>10s}  reps"]
    for r in rows:
        lines.append(f"{r['tracks']:>6d} {r['device']:>13s} {r['version']:>10s} {r['ms_median']:>10.3f} "
                     f"{r['ms_p99']:>7.3f} {r['full_pass_ms']:>10.2f}  {r['reps_ms']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for gate_gpu_last.json")
    p.add_argument("--before", help="folder with the older code (persistence/, tracker3d/bench/)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--eager", action="store_true", help="also time eager torch on the GPU (no graphs)")
    a = p.parse_args(argv)
    res = run(a.before, a.quick, a.reps, Path(a.out), a.eager)
    res["summary"] = summary(res)
    _write(res, Path(a.out))
    print(f"gpu: {res['gpu']}, torch {res['torch']}, {res['cpu_cores']} cores, {res['frames']} frames x "
          f"{res['reps']} reps")
    print(format_summary(res["summary"]))
    print("auto pick:", res["auto_pick"])
    print("auto log:", *res["auto_log"], sep="\n  ")
    if "max_score_diff_gpu_vs_cpu" in res:
        print("max |score gpu - cpu|:", res["max_score_diff_gpu_vs_cpu"])
    print("one CPU step, ms (numpy, torch):", {n: (round(v["numpy"], 3), round(v["torch"], 3))
                                               for n, v in (res["numpy_vs_torch_step_ms"] or {}).items()})
    print("gate's own work around the step, ms:", {n: round(v, 3) for n, v in res["host_ms"].items() if v})
    if res.get("host_ms_before"):
        print("  before:", {n: round(v, 3) for n, v in res["host_ms_before"].items()})
    for ver, c in res["op_counts"].items():
        for dev, row in (c or {}).items():
            print(f"one padded step ({ver}, {dev}, 200 tracks): {row['aten_ops']} aten ops"
                  + (f", {row['cuda_kernels']} CUDA kernels, {row['cuda_copies']} copies" if "cuda_kernels" in row else ""))
    for e in res.get("errors", []):
        print("ERROR", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
