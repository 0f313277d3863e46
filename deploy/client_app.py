"""The Flower ClientApp: one hospital (node config `partition-id` of `num-partitions`).

Messages it answers (deploy/coordinator.py sends them):
    query "describe" -> its public facts (name, key, split sizes, the data's shape)
    train "step"     -> any of: score the global model on its own val or test split; train
                        its sub-clients from it and prepare their rows (reply: the round's
                        public facts and, outside --strict_dp, the rows' norms, which are the
                        simulation's norm messages); clip the rows to the announced bound and
                        reply with the update messages. Flower 1.41 starts a ClientApp
                        process for every message, so a round asks for all it can at once.
    train (default)  -> SecAgg+ (--flower_secagg): `secaggplus_mod` runs the protocol's
                        stages; at its collect stage this handler returns the hospital's
                        clipped, weighted sum, which the mod then masks (clipping comes before
                        masking: the protocol sums whatever it is given)
"""
from __future__ import annotations

import torch
from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common.recorddict_compat import fitres_to_recorddict, recorddict_to_fitins

from deploy.hospital import HospitalSite
from deploy.settings import parse_flags
from deploy.wire import VALUES, load_state, pack, save_state, unpack

app = ClientApp()


class DroppedOut(RuntimeError):
    """--drop_hospitals: this hospital leaves the round after sharing its keys."""


# per process (a simulation's worker serves several nodes): rebuilt from the flags, never the run's state
_SITES: dict[tuple, HospitalSite] = {}


def site_of(msg: Message, context: Context) -> HospitalSite:
    """This node's hospital, built from the flags the server's message names."""
    flags = str(msg.content[VALUES]["flags"]) if VALUES in msg.content else \
        str(msg.content.config_records["fitins.config"]["flags"])
    index, count = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    key = (flags, index, count)
    if key not in _SITES:
        cfg = parse_flags(flags)
        torch.set_num_threads(max(cfg.threads, 1))  # one core per hospital unless --threads says otherwise
        _SITES[key] = HospitalSite(cfg, index, count)
    return _SITES[key]


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    return Message(pack(site_of(msg, context).describe()), reply_to=msg)


@app.train("step")
def step(msg: Message, context: Context) -> Message:
    """One message of a round, doing what its values ask, in this order:
    `score` (a split): score the message's parameters (the model after the previous round);
    `train` (the round): train every sub-client from those parameters and prepare its row;
    `send` (the round): clip the held rows to `bound` and reply with the update messages."""
    site = site_of(msg, context)
    values, tensors = unpack(msg.content)
    reply, arrays = {}, {}
    if "score" in values:
        scores = site.evaluate(tensors["params"], str(values["score"]))
        reply.update({f"score.{k}": float(v) for k, v in scores.items()})
    if "train" in values or "send" in values:
        state = load_state(context.state)
        if "train" in values:
            round_idx = int(values["train"])
            state = site.start(state, list(zip(values["split_rounds"], values["split_counts"])))
            precondition = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("precondition.")}
            facts, state = site.train(state, tensors["params"], round_idx, float(values["lr"]), precondition)
            reply.update(facts)
            save_state(state, context.state)
        if "send" in values:
            bound = float(values["bound"]) if "bound" in values else None
            messages = site.send(state, int(values["send"]), bound)
            arrays["updates"] = torch.stack([m.payload for m in messages])
            if bound is not None:
                arrays.update({name: torch.stack([m.shares[name] for m in messages])
                               for name in ("clipped_norm", "within_bound")})
    return Message(pack(reply, arrays), reply_to=msg)


@app.train(mods=[secaggplus_mod])
def train_secure(msg: Message, context: Context) -> Message:
    """SecAgg+'s collect stage: the legacy fit instruction carries the round and the bound
    (config) and this hospital's weights (parameters); the result is its clipped, weighted
    sum, which the mod quantises and masks on its way out."""
    site = site_of(msg, context)
    fitins = recorddict_to_fitins(msg.content, keep_input=True)
    if str(site.index) in str(fitins.config.get("drop", "")).split(","):
        raise DroppedOut(f"{site.hospital.name} dropped out of SecAgg+ (--drop_hospitals)")
    weights = [float(w) for w in parameters_to_ndarrays(fitins.parameters)[0]]
    vector = site.secure_input(load_state(context.state), int(fitins.config["round"]),
                               float(fitins.config["bound"]), weights)
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([vector.numpy()]), 1, {})
    return Message(fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)
