"""Run a sweep of fed_train.py command lines, skipping finished runs and resuming broken ones.

    printf '%s\n' "--mode fedavg --seed 0" "--mode fedadam --seed 0" | python -m tools.sweep --jobs 2

Each input line is one run's flags (a leading `python fed_train.py` is allowed, so lines
copied from a sweep file work). A run whose folder holds summary.json is skipped; one
with a last.pt but no summary continues with --resume; one that crashed before its first
checkpoint starts again; a line repeated (the same run folder) runs once. A line whose
named folder (--exp) holds another setting stops the sweep before anything runs. Runs go
to `--jobs` worker processes that import torch once each (starting Python per run would
cost about 5 s), with one log file per run (RUN_DIR.log next to its folder). Exit status
1 when any run failed (the failures are listed); 130 when interrupted (Ctrl-C or SIGTERM:
the runs in progress stop at once and resume from their last checkpoint when the same
command is run again).
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from utils import runfiles

def parse_line(line: str) -> list[str] | None:
    """Flags of one command line; None for blank and comment lines."""
    words = shlex.split(line, comments=True)
    for i, word in enumerate(words[:2]):
        if word.endswith("fed_train.py"):  # `python fed_train.py ...` or `fed_train.py ...`
            return words[i + 1:]
    return words or None


def plan(argv: list[str]) -> tuple[str, list[str], Path]:
    """('done' | 'resume' | 'start', flags to run with, run folder)."""
    from federated.config import ConfigError, parse_config
    from federated.runfolder import differing_setting, run_dir

    cfg = parse_config(argv)
    folder = run_dir(cfg)
    if runfiles.has_checkpoint(folder) and (differ := differing_setting(folder, cfg)):
        raise ConfigError(f"run folder {folder} holds another setting ({differ}); give the line its own --exp")
    if runfiles.is_finished(folder):
        return "done", argv, folder
    if runfiles.has_checkpoint(folder):
        return "resume", argv + ["--resume"], folder
    if folder.exists():
        return "start", argv + ["--overwrite"], folder  # crashed before its first checkpoint
    return "start", argv, folder


def _worker_init() -> None:
    """Workers leave Ctrl-C to the sweep, which stops them all at once (no traceback from
    each); a run stopped that way resumes from its last checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock is a multiprocessing semaphore, which a worker stopped by SIGTERM
    # cannot release ("leaked semaphore" warnings); runs in a worker need only a thread lock.
    tqdm.set_lock(threading.RLock())


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _run_one(job: tuple[list[str], str, int]) -> tuple[str, int, float]:
    argv, log_path, threads = job
    from federated import cli

    if "--threads" not in argv:  # one run per core share: parallel runs must not oversubscribe the cores
        argv = argv + ["--threads", str(threads)]
    start = time.perf_counter()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print("python fed_train.py " + shlex.join(argv), flush=True)
        try:
            code = cli.main(argv + ["--no_progress"])
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception:  # keep the sweep going; the log holds the traceback
            import traceback
            traceback.print_exc()
            code = 1
    return log_path, code, time.perf_counter() - start


def run_sweep(lines: list[str], *, jobs: int, dry_run: bool = False) -> int:
    from federated.config import ConfigError

    runs = [(n, argv) for n, argv in enumerate(map(parse_line, lines), 1) if argv is not None]
    todo, done, seen = [], 0, {}
    for line_no, argv in runs:
        try:
            status, run_argv, folder = plan(argv)
        except SystemExit:  # argparse printed what is wrong with the flags
            print(f"sweep: line {line_no} has invalid flags: {shlex.join(argv)}; nothing was run", file=sys.stderr)
            return 2
        except ConfigError as err:
            print(f"sweep: line {line_no}: {err}; nothing was run", file=sys.stderr)
            return 2
        if folder in seen:
            print(f"sweep: line {line_no} is the same run as line {seen[folder]} ({folder}); it runs once",
                  file=sys.stderr)
            continue
        seen[folder] = line_no
        if status == "done":
            done += 1
            continue
        todo.append((run_argv, str(folder) + ".log"))
        if dry_run:
            print(f"{status}: python fed_train.py {shlex.join(run_argv)}")
    print(f"sweep: {len(seen)} runs, {done} finished (skipped), {len(todo)} to run with {jobs} job(s)",
          file=sys.stderr)
    if dry_run or not todo:
        return 0
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // jobs))
    todo = [(argv, log, threads) for argv, log in todo]
    failed, finished = [], 0
    previous_term = signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop: as Ctrl-C
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(jobs, initializer=_worker_init)
    bar = tqdm(total=len(todo), unit="run", desc="sweep", file=sys.stderr, disable=None)  # a terminal only
    try:
        for log_path, code, seconds in pool.imap_unordered(_run_one, todo):
            bar.update()
            finished += 1
            if code != 0:
                failed.append(log_path)
                bar.write(f"failed (exit {code}): see {log_path}")
        pool.close()
    except KeyboardInterrupt:
        pool.terminate()  # SIGTERM: the runs stop where they are; their checkpoints are whole (atomic writes)
        bar.close()
        print(f"sweep: interrupted; {finished} of {len(todo)} runs had ended ({len(failed)} failed); the others stopped "
              "and resume from their last checkpoint: rerun the same command to continue", file=sys.stderr)
        return 130
    finally:
        bar.close()
        pool.join()
        signal.signal(signal.SIGTERM, previous_term)
    if failed:
        print(f"sweep: {len(failed)} of {len(todo)} runs failed; logs:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (each in its own process)")
    p.add_argument("--dry_run", action="store_true", help="list what would run, run nothing")
    p.add_argument("file", nargs="?", default="-", help="file of command lines, or - for stdin")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1 (got {args.jobs})")
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    return run_sweep(text.splitlines(), jobs=args.jobs, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
