"""Ways a run can stop part-way. Each message says what happened, what was kept and how to
go on; fed_train.py prints it on one line and exits with `exit_code`."""


class RunError(RuntimeError):
    exit_code = 1


class Diverged(RunError):
    """A non-finite loss, update or model: continuing would train on NaN and score noise."""
    exit_code = 3


class AggregationAborted(RunError):
    """Secure aggregation lost too many inputs to unmask the sum: the round has no update."""
    exit_code = 4


class Interrupted(RunError):
    exit_code = 130  # the shell's code for Ctrl-C
