"""The files of a run folder, named in one place.

    SAVE_PATH/DATA/seedS/RUN/
        config.json     the resolved flags
        metrics.csv     long-format metrics, rewritten with every checkpoint
        tb/             TensorBoard events
        last.pt         everything a resume needs (written every --ckpt_every rounds)
        best.pt         the model of the best validation round
        last_model.pt   the model after the last round
        summary.json    the end of the run (its presence means: finished)
        releases.json   --secure_rng: the releases journal
        .lock           held by the process writing the folder

A leaf module: the loop, the run folder's owner (federated/runfolder.py) and the tools
that read results all take the names from here.
"""
from __future__ import annotations

from pathlib import Path

CONFIG = "config.json"
METRICS = "metrics.csv"
TENSORBOARD = "tb"
CHECKPOINT = "last.pt"
BEST_MODEL = "best.pt"
LAST_MODEL = "last_model.pt"
SUMMARY = "summary.json"
JOURNAL = "releases.json"
LOCK = ".lock"


def is_finished(folder: Path) -> bool:
    return (folder / SUMMARY).exists()


def has_checkpoint(folder: Path) -> bool:
    return (folder / CHECKPOINT).exists()
