"""fed_train.py that kills itself (SIGKILL) half-way through its Nth result write.

    KILL_AT_WRITE=N python tests/fault_runner.py FLAGS...   # N = 0: never
    WRITE_LOG=path: append the name of every file written, one per line

Every result file goes through utils.io's atomic write, so the state on disk only changes
at those writes: killing inside each of them covers every state a crash can leave.
"""
import io as stdio
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import io  # noqa: E402

KILL_AT = int(os.environ.get("KILL_AT_WRITE", "0"))
LOG = os.environ.get("WRITE_LOG")
_real_atomic = io._atomic
_count = 0


def _half_then_die(write):
    def half(f):
        buf = stdio.BytesIO()
        write(buf)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return half


def atomic(path, write):
    global _count
    _count += 1
    if LOG:
        with open(LOG, "a") as log:
            log.write(Path(path).name + "\n")
    _real_atomic(path, _half_then_die(write) if _count == KILL_AT else write)


io._atomic = atomic

from federated.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
