"""Torch tensors and plain values in and out of Flower's records (what travels in a Message)."""
from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from deploy.hospital import SiteState

ARRAYS, VALUES = "arrays", "values"


def tensors_record(tensors: dict[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({name: Array(t.detach().cpu().contiguous().numpy()) for name, t in tensors.items()})


def record_tensors(record: ArrayRecord) -> dict[str, torch.Tensor]:
    # the copy: Flower's arrays are read-only buffers
    return {name: torch.from_numpy(np.array(array.numpy(), copy=True)) for name, array in record.items()}


def pack(values: dict | None = None, tensors: dict[str, torch.Tensor] | None = None) -> RecordDict:
    """A message's content: plain values (numbers, strings, bytes and lists of them) and tensors."""
    content = RecordDict()
    content[VALUES] = ConfigRecord(dict(values or {}))
    if tensors:
        content[ARRAYS] = tensors_record(tensors)
    return content


def unpack(content: RecordDict) -> tuple[dict, dict[str, torch.Tensor]]:
    values = dict(content[VALUES]) if VALUES in content else {}
    tensors = record_tensors(content[ARRAYS]) if ARRAYS in content else {}
    return values, tensors


# -- a hospital's state between messages, in Flower's node state -----------------------
STATE = "hospital"


def save_state(state: SiteState, records: RecordDict) -> None:
    values = {"count": state.count, "split_round": state.split_round, "in_order": state.in_order,
              "round": state.round, "local_steps": list(state.local_steps)}
    if state.secret is not None:
        values["secret"] = state.secret
    if state.moments:
        values["moment_counts"] = list(state.moments["counts"])
    tensors = {f"moments.{k}": v for k, v in state.moments.items() if k != "counts"}
    if state.prepared is not None:
        tensors["prepared"] = state.prepared
    records[f"{STATE}.values"] = ConfigRecord(values)
    records[f"{STATE}.arrays"] = tensors_record(tensors)


def load_state(records: RecordDict) -> SiteState:
    if f"{STATE}.values" not in records:
        return SiteState()
    values = dict(records[f"{STATE}.values"])
    tensors = record_tensors(records[f"{STATE}.arrays"])
    moments = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("moments.")}
    if moments:
        moments["counts"] = list(values["moment_counts"])
    return SiteState(values.get("secret"), values["count"], values["split_round"], values["in_order"], moments,
                     values["round"], tensors.get("prepared"), list(values["local_steps"]))
