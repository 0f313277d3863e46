"""One hospital in a deployment: its data, its sub-clients, and the client half of the release.

A `HospitalSite` is what a Flower ClientApp runs (deploy/client_app.py), kept free of
Flower so that it can be tested in one process. It trains its own sub-clients exactly as
the simulation's round loop does (same keyed generators, same engine, same Adam state per
sub-client) and sends what the simulation's `ClientHalf` sends; the server never sees its
records, its sub-client split or its unclipped updates.

What persists between messages (sub-client Adam state, the split, the prepared rows of the
round in flight) is a `SiteState` the ClientApp keeps in Flower's node state: the site
object itself is rebuilt from the flags whenever a process needs it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from datasets import build_centre
from datasets.base import Shard
from federated.adam import SubclientMoments
from federated.config import Config, ConfigError
from federated.engine import Job
from federated.errors import Diverged
from federated.evaluate import eval_set, evaluate
from federated.messages import UPDATE, Message
from federated.pipeline import ClientHalf, ClientRound
from federated.server import ServerRound, build_server
from federated.setup import build_global_model, build_trainer, select_device
from federated.task import make_task
from federated.subclients import assign, paper_split, record_keys, split_generator
from privacy.client_dp import client_message
from utils.seeding import client_generator, make_generator, split_secret


@dataclass
class SiteState:
    """A hospital's state between messages (kept by the ClientApp in Flower's node state)."""
    secret: bytes | None = None        # key of its sub-client split (from the seed, or the OS under --secure_rng)
    count: int = 0                     # its sub-clients now
    split_round: int = 0               # the round its current split was drawn for (--subclient_split paper)
    in_order: bool = False             # after a paper re-split: record order, last partial batch kept
    moments: dict = field(default_factory=dict)  # its sub-clients' Adam state (SubclientMoments.state_dict)
    round: int = -1                    # the round whose prepared rows are held
    prepared: torch.Tensor | None = None  # [K, P]: its sub-clients' rows, prepared and not yet clipped
    local_steps: list[int] = field(default_factory=list)


class HospitalSite:
    """Hospital `index` of the federation the flags describe (its partition-id)."""

    def __init__(self, cfg: Config, index: int, num_partitions: int):
        self.cfg = cfg
        self.device = select_device(cfg.gpu)
        if num_partitions != cfg.clients:
            raise ConfigError(f"the federation has {num_partitions} nodes but the flags describe {cfg.clients} "
                              "hospitals (-N); start one node per hospital")
        if not 0 <= index < num_partitions:
            raise ConfigError(f"partition-id {index} is outside 0..{num_partitions - 1}")
        # its own hospital only: per-site formats read only its files (datasets.build_centre)
        data = build_centre(cfg, make_generator(cfg.seed, "data"), index)
        self.data = data.to(self.device)
        self.hospital = self.data.hospitals[0]
        self.index = index
        model, model_name = build_global_model(cfg, data.task, data.in_channels, data.num_outputs, self.device)
        self.model = model
        self.trainer, self.engine, self.engine_note = build_trainer(cfg, self.data, model, model_name, self.device)
        self.task_kind = data.task
        self.task = make_task(data.task, seg_loss=cfg.seg_loss)
        self.server = build_server(cfg.mode, adam_lr=cfg.adam_lr, rmsprop_lr=cfg.rmsprop_lr,
                                   dp2_interval=cfg.dp2_interval)  # only its preconditioner is used here
        self.client = ClientHalf(self.server, None, None)
        self._keys: tuple[bytes, object] | None = None

    def describe(self) -> dict:
        """The public facts the server plans the federation from (what fed_train.py's
        planning reads of each hospital: its name, key and sizes, and the data's shape)."""
        return {"index": self.index, "name": self.hospital.name, "key": self.hospital.key,
                "train": len(self.hospital.train),
                "val": len(self.hospital.val), "test": len(self.hospital.test), "task": self.task_kind,
                "in_channels": self.data.in_channels, "num_outputs": self.data.num_outputs}

    # -- sub-clients ---------------------------------------------------------------

    def _split(self, state: SiteState) -> list[torch.Tensor]:
        """Its sub-clients' index sets, drawn as the simulation's `draw_split` draws them."""
        if self.cfg.subclient_split == "hash":
            if self._keys is None or self._keys[0] != state.secret:
                self._keys = (state.secret, record_keys(self.hospital.train, state.secret))
            return assign(self._keys[1], state.count)
        return paper_split(len(self.hospital.train), state.count,
                           split_generator(state.secret, state.split_round, self.hospital.key))

    def _moments(self, state: SiteState, numel: int, dtype: torch.dtype) -> SubclientMoments | None:
        if self.cfg.reset_optimizer:
            return None
        if not state.moments:
            return SubclientMoments.fresh([state.count], numel, dtype=dtype, device=self.device)
        return SubclientMoments.from_state_dict(state.moments, self.device)

    def start(self, state: SiteState, splits: list[tuple[int, int]]) -> SiteState:
        """Adopt the server's sub-client splits so far: (first round, its sub-client count)
        for the run's first split and each re-split. The simulation re-splits every hospital
        after the rule's round, averaging its sub-clients' Adam states into the new ones; a
        hospital that was not sampled then replays the re-splits it missed, in order, so it
        ends in the same state."""
        if state.secret is None:
            state.secret = split_secret(self.cfg.seed, secure=self.cfg.secure_rng)
            state.split_round, state.count = splits[0]
        for split_round, count in splits:
            if split_round <= state.split_round:
                continue
            if state.moments:
                state.moments = SubclientMoments.from_state_dict(state.moments, self.device).resplit([count]) \
                    .state_dict()
            state.count, state.split_round = count, split_round
            state.in_order = self.cfg.subclient_split == "paper"  # the paper's re-split loaders do not shuffle
        return state

    # -- one round -----------------------------------------------------------------

    def train(self, state: SiteState, params: torch.Tensor, round_idx: int, lr: float,
              precondition: dict) -> tuple[dict, SiteState]:
        """Train every sub-client from `params` and prepare its row (precondition with the
        server's public preconditioner); hold the rows for `send`. Returns the public facts
        of the round (records and local steps per sub-client, sub-client sizes, training
        losses) and, outside --strict_dp, each row's norm, as the simulation's norm message."""
        params = params.to(self.device)
        index_sets = self._split(state)
        moments = self._moments(state, params.numel(), params.dtype)
        jobs = [Job(0, k, Shard(self.hospital.train, idx.to(self.device)),
                    client_generator(self.cfg.seed, round_idx, self.hospital.key, k), in_order=state.in_order)
                for k, idx in enumerate(index_sets)]
        deltas, results = self.engine.train(params, jobs, moments, lr)
        if not bool(torch.isfinite(deltas).all()):
            raise Diverged(f"training diverged in round {round_idx}: {self.hospital.name} produced a non-finite "
                           f"update (local --lr {lr:g}); lower --lr")
        if moments is not None:
            state.moments = moments.state_dict()
        self.server.load_precondition_state(precondition)
        steps = [r.num_steps for r in results]
        rows = [self.client.prepare(row, self._client_round(round_idx, k, steps))
                for k, row in enumerate(deltas)]
        state.prepared, state.round, state.local_steps = torch.stack(rows).cpu(), round_idx, steps
        reply = {}
        for name, needed, value in self.round_facts(results, index_sets):
            if needed:
                reply[name] = value
        if not (self.cfg.strict_dp and self.cfg.private):
            reply["norms"] = [float(self.client.norm_message(row, (self.index, k),
                                                             self._client_round(round_idx, k, steps)).payload)
                              for k, row in enumerate(rows)]
        return reply, state

    def round_facts(self, results, index_sets) -> list[tuple[str, bool, list]]:
        """What a hospital tells the server of its round, each only when the server's side
        of the release reads it, as in the simulation: the training losses outside
        --strict_dp (like fed_train.py, nothing but the update under it); the records per
        sub-client for the weights (without client-level DP, or --weighted_avg); the local
        steps for FedNova's normalisation (and beside the losses); its sub-clients' sizes
        for --weighted_avg's denominator."""
        cfg = self.cfg
        strict = cfg.strict_dp and cfg.private
        return [("losses", not strict, [r.loss for r in results]),
                ("num_samples", not cfg.private or cfg.weighted_avg, [r.num_samples for r in results]),
                ("local_steps", not strict or cfg.mode in ("fednova", "dpnova"), [r.num_steps for r in results]),
                ("sizes", cfg.weighted_avg, [len(i) for i in index_sets])]

    def send(self, state: SiteState, round_idx: int, bound: float | None) -> list[Message]:
        """Each sub-client's update message, clipped to the announced `bound` (client-level
        DP; None without it), as the simulation's `ClientHalf.send`."""
        self._check_round(state, round_idx)
        messages = []
        for k, row in enumerate(state.prepared.to(self.device)):
            if bound is None:
                messages.append(Message(UPDATE, (self.index, k), round_idx, self.client.encode(row)))
            else:
                share = client_message(row, bound)
                messages.append(Message(UPDATE, (self.index, k), round_idx, self.client.encode(share.update),
                                        {"clipped_norm": share.clipped_norm, "within_bound": share.within_bound}))
        return messages

    def secure_input(self, state: SiteState, round_idx: int, bound: float, weights: list[float]) -> torch.Tensor:
        """Flower SecAgg+'s input: the weighted sum of its sub-clients' clipped updates with
        the weighted side values (clipped norm, within-bound bit) appended, [P + 2]. It is
        clipped here, before Flower's mod masks it: the protocol sums whatever it is given."""
        total = None
        for message, w in zip(self.send(state, round_idx, bound), weights, strict=True):
            sides = torch.stack([message.shares["clipped_norm"], message.shares["within_bound"]]).to(message.payload)
            row = w * torch.cat([message.payload, sides])
            total = row if total is None else total + row
        return total.double().cpu()

    def evaluate(self, params: torch.Tensor, split: str) -> dict[str, float]:
        """The global model's scores on its own `split` ("val" or "test")."""
        es = eval_set(self.data, split, merge=False, batch=self.cfg.batch)
        scores = evaluate(self.model, self.trainer.flat, params.to(self.device), es, self.task)
        return scores[self.hospital.name]

    @staticmethod
    def _client_round(round_idx: int, k: int, steps: list[int]) -> ClientRound:
        # the weights are the server's (a hospital may not know them before it trains);
        # preconditioning never reads them
        nan = torch.tensor([float("nan")])
        return ClientRound(round_idx, ServerRound(round_idx, nan, torch.tensor([float(steps[k])])), None)

    @staticmethod
    def _check_round(state: SiteState, round_idx: int) -> None:
        if state.prepared is None or state.round != round_idx:
            raise RuntimeError(f"asked to send round {round_idx}, but this hospital holds the rows of round "
                               f"{state.round}: the server skipped the train message")
