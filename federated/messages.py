"""What leaves a client: the messages of one round, and the hook that sees each of them.

A sub-client sends one `update` message a round. Outside --strict_dp it first sends a
`norm` message, the norm of its prepared update: the paper's median clip bound and its
intermediary statistics are computed from those norms, which the privacy report declares
as not covered. Secure aggregation and encryption change what `payload` holds (the
`encode` step), never who sends what.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

UPDATE, NORM = "update", "norm"


@dataclass(frozen=True)
class Message:
    kind: str                # UPDATE or NORM
    sender: tuple[int, int]  # (hospital index, sub-client index)
    round: int
    payload: torch.Tensor    # UPDATE: the encoded update [P]; NORM: its L2 norm (0-d)
    # UPDATE under client-level DP: the sender's shares of the side statistics the server
    # sums ("clipped_norm", "within_bound"); released with noise only under --strict_dp.
    shares: dict[str, torch.Tensor] = field(default_factory=dict)


MessageHook = Callable[[Message], None]  # read-only: it must not modify the message
