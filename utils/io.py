"""Atomic file writes: write to a temporary name in the same folder, then rename, so a
crash never leaves a half-written result."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class ResultWriteError(OSError):
    """A result file could not be written (disk full, read-only, permissions)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; results are shared like any other file.
FILE_MODE = 0o666 & ~_umask()


def _atomic(path: Path, write) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise ResultWriteError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: str | None) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary files of writes that a killed process never finished."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink()


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def write_figure(path: Path, fig) -> None:
    """A matplotlib figure as PNG."""
    _atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))


def write_json(path: Path, obj: Any) -> None:
    """Standard JSON (jq, JavaScript): infinities are written as the strings "inf" / "-inf",
    NaN as null."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, default=_jsonable, allow_nan=False)
    write_text(path, text + "\n")


def read_json(path: Path) -> Any:
    """A file of write_json, with "inf" / "-inf" read back as floats."""
    return _infinite(json.loads(Path(path).read_text()))


def _infinite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _infinite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_infinite(v) for v in value]
    if value in ("inf", "-inf"):
        return float(value)
    return value


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _finite(value.tolist())
    if isinstance(value, float) or getattr(value, "ndim", None) == 0 and isinstance(value.item(), float):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def write_csv(path: Path, fieldnames: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def torch_save(obj: Any, path: Path) -> None:
    _atomic(path, lambda f: torch.save(obj, f))


def _jsonable(value: Any):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
