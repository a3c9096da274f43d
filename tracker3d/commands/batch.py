"""`tracker3d batch`: replay (and evaluate) many recordings or detection folders, in parallel
processes or on a Ray cluster, into an output tree; resumable."""
from __future__ import annotations

import argparse
import time

from ..batch.engine import add_engine_args, engine_from_args, run_tasks
from ..batch.replay_batch import (
    FORMATS,
    add_replay_options,
    finished_row,
    format_rows,
    make_tasks,
    replay_option_actions,
    resolve_inputs,
    run_replay_task,
    write_summary,
)
from ..progress import bar
from .signals import STOP

HELP = "replay (and --eval) many recordings or detection folders in parallel, locally or on Ray; resumable"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help=HELP, description=HELP + ". Each input gets OUT/NAME/ with tracks, "
                       "summary.json, log.txt (and eval.json); inputs already done with the same options are "
                       "skipped, so a killed batch resumes. Exit code 1 when an input failed.")
    p.add_argument("inputs", nargs="*", help="recording or detections folders, or globs ('rec/*')")
    p.add_argument("--list", metavar="FILE", help="a file of input folders, one per line (# comments)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="output tree (one folder per input)")
    p.add_argument("--format", default="jsonl", choices=FORMATS, help="tracks file format (default jsonl)")
    p.add_argument("--eval", action="store_true", help="also score each input that has gt.csv (eval.json)")
    p.add_argument("--force", action="store_true", help="redo inputs that are already done")
    add_engine_args(p)
    add_replay_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec = engine_from_args(args)
    inputs = resolve_inputs(args.inputs, args.list)
    options = {a.dest: getattr(args, a.dest) for a in replay_option_actions()}
    tasks = make_tasks(inputs, args.out_dir, args.format, options, args.eval, detect_threads=spec.kind == "serial")
    rows: list[dict] = [{}] * len(tasks)
    todo = []
    for i, task in enumerate(tasks):
        done = None if args.force else finished_row(task)
        if done is not None:
            rows[i] = {**done, "status": "done"}
        else:
            todo.append(i)
    where = {"local": f"{spec.n_workers} local processes", "serial": "this process",
             "ray": f"Ray at {spec.address}" if spec.address else f"a local Ray instance ({spec.n_workers} CPUs)"}
    print(f"batch: {len(tasks)} inputs, {len(tasks) - len(todo)} already done, {len(todo)} to run on "
          f"{where[spec.kind]}")
    t = time.perf_counter()
    progress = bar("batch", total=len(todo), unit="input")
    failed = 0
    interrupted = False
    try:
        for outcome in run_tasks(run_replay_task, [tasks[i] for i in todo], spec):
            i = todo[outcome.index]
            if STOP.requested():  # a replay in this process (--engine serial) stopped early: no result
                interrupted = True
                break
            if outcome.ok:
                rows[i] = outcome.value
            else:
                failed += 1
                rows[i] = {"name": tasks[i].name, "input": tasks[i].input, "status": "failed",
                           "error": outcome.error}
                progress.write(f"batch: {tasks[i].input} failed: {outcome.error} (log: {tasks[i].out_dir}/log.txt)")
            progress.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        for i, task in enumerate(tasks):
            if not rows[i]:
                rows[i] = {"name": task.name, "input": task.input, "status": "not run"}
        write_summary(args.out_dir, rows)
    wall = time.perf_counter() - t
    print(format_rows(rows))
    ran = [r for r in rows if r.get("status") == "ok"]
    pairs = sum(r["pairs"] for r in ran)
    print(f"{len(ran)} replayed, {sum(r['status'] == 'done' for r in rows)} skipped (done earlier), {failed} failed; "
          f"{pairs} pairs in {wall:.1f} s ({pairs / wall if wall > 0 else 0:.1f} pairs/s overall); "
          f"summary: {args.out_dir}/batch_summary.json")
    if interrupted:
        print("batch: interrupted; run the same command again to finish the inputs not done")
        return STOP.rc or 130
    return 1 if failed else 0

