"""The server of a deployment: fed_train.py's round, with the hospitals in other processes.

It holds no data. From the hospitals' public facts (their sizes and the data's shape) it
plans the federation as fed_train.py does, then runs each round through the same
`ReleasePipeline` phases, the same ledger and the same intermediary rule:

    sample hospitals -> "step" at each sampled hospital: train its sub-clients, prepare,
    and (when the bound is known in advance) clip and send -> open_round (weights) ->
    announce (the clip bound; the paper's median reads the norms, then a second "step"
    asks for the clipped updates) -> close_round (combine, noise, server step), or
    Flower's SecAgg+ sum then `release` (deploy/secagg.py) -> the intermediary rule.
    The hospitals score each round's model with the next round's message.

Every random draw the server makes (sampling, central noise) comes from the same streams
as in fed_train.py, and every hospital trains with the same keyed generators, so the same
flags give the same global parameters (tests/test_flower.py).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch
from flwr.app import Message as FlowerMessage
from flwr.serverapp import Grid
from tqdm import tqdm

from deploy.settings import FlowerOptions, check_run_folder
from deploy.wire import VALUES, pack, unpack
from federated.config import Config, ConfigError
from federated.errors import Diverged, RunError
from federated.evaluate import MEAN, nanmean
from federated.flat import FlatState
from federated.loop import choose_subclients, improves, local_lr, is_probe_round
from federated.messages import NORM, UPDATE, Message
from federated.pipeline import Participants, ReleasePipeline
from federated.privacy_setup import build_client_dp, declared_outputs, planned_shapes, threat_model
from federated.run import client_privacy
from federated.runfolder import clear_uncheckpointed, prepare_run
from federated.canaries import planned_subclients
from federated.sampling import sample_hospitals
from federated.server import build_server
from federated.setup import build_global_model
from federated.subclients import allocate_subclients
from federated.task import make_task
from privacy.events import UNITS
from privacy.intermediary import max_subclients
from privacy.ledger import PrivacyLedger
from privacy.report import build_report, format_report
from utils import io, runfiles
from utils.results import RunRecorder, metric_rows
from utils.seeding import make_streams


class HospitalLost(RunError):
    """A hospital did not answer (its node stopped, or its ClientApp failed)."""


@dataclass
class Site:
    """The server's view of one hospital: its node and its public facts."""
    node: int
    facts: dict
    sizes: list[int] = field(default_factory=list)  # its sub-clients' sizes, as it last reported them


class Coordinator:
    def __init__(self, grid: Grid, cfg: Config, options: FlowerOptions, *, flags: str, engine: str):
        self.grid, self.cfg, self.options, self.flags, self.engine = grid, cfg, options, flags, engine
        self.round_seconds: list[float] = []
        self.secagg_inputs: list[int] = []  # hospitals whose input each SecAgg+ sum holds
        self.sites: list[Site] = []
        self.splits: list[tuple[int, list[int]]] = []  # (first round, sub-clients per hospital) of each split

    # -- messaging -------------------------------------------------------------------

    def exchange(self, nodes: list[int], kind: str, contents: list, what: str) -> list:
        """Send one message per node and wait for every reply; a missing or failed reply
        stops the run with one line naming the hospital (no round ends without it)."""
        for content in contents:  # every message names the run's flags: the hospitals build from them
            content[VALUES]["flags"] = self.flags
        messages = [FlowerMessage(content, dst_node_id=node, message_type=kind) for node, content in
                    zip(nodes, contents)]
        replies = {r.metadata.src_node_id: r for r in
                   self.grid.send_and_receive(messages, timeout=self.options.reply_timeout)}
        out = []
        for node in nodes:
            reply = replies.get(node)
            name = self._name_of(node)
            if reply is None:
                raise HospitalLost(f"{what}: no reply from {name} (node {node}) within {self.options.reply_timeout:g} "
                                   "s: its node stopped or cannot be reached")
            if reply.has_error():
                raise HospitalLost(f"{what}: {name} (node {node}) failed: {reply.error.reason}")
            out.append(reply)
        return out

    def _name_of(self, node: int) -> str:
        for site in self.sites:
            if site.node == node:
                return site.facts["name"]
        return "a hospital"

    def connect(self) -> list[Site]:
        """Wait for one node per hospital, then learn who is who (partition order)."""
        expected, waited = self.cfg.clients, 0.0
        while len(nodes := list(self.grid.get_node_ids())) < expected:
            if waited >= self.options.node_wait:
                raise HospitalLost(f"{len(nodes)} of {expected} hospitals' nodes connected within "
                                   f"{self.options.node_wait:g} s; start one supernode per hospital (-N {expected})")
            time.sleep(0.5)
            waited += 0.5
        replies = self.exchange(nodes, "query.describe", [pack() for _ in nodes], "connecting")
        sites = sorted((Site(node, unpack(r.content)[0]) for node, r in zip(nodes, replies)),
                       key=lambda s: s.facts["index"])
        if [s.facts["index"] for s in sites] != list(range(expected)):
            raise ConfigError(f"the nodes hold partitions {[s.facts['index'] for s in sites]} for -N {expected} "
                              f"hospitals; start exactly one node per partition-id 0..{expected - 1}")
        return sites

    # -- the run ---------------------------------------------------------------------

    def run(self) -> dict:
        started = time.perf_counter()
        cfg = self.cfg
        self.sites = self.connect()
        facts = self.sites[0].facts
        sizes = [s.facts["train"] for s in self.sites]
        counts = allocate_subclients(sizes, cfg.virtual_clients, balance=cfg.balance_split)
        for site, n, k in zip(self.sites, sizes, counts):
            if k > n:
                raise ConfigError(f"-VN/--virtual_clients {cfg.virtual_clients} asks for {k} sub-clients in "
                                  f"{site.facts['name']}, which has only {n} training images")
        cap = cfg.max_vn or max_subclients(sizes, cfg.batch)
        model, _ = build_global_model(cfg, facts["task"], facts["in_channels"], facts["num_outputs"],
                                      torch.device("cpu"))
        flat = FlatState(model)
        self.model = model
        self.task = make_task(facts["task"], seg_loss=cfg.seg_loss)
        self.ledger = PrivacyLedger()
        client_dp = None
        if cfg.private:
            client_dp = build_client_dp(cfg, self.ledger, planned_shapes(cfg, sizes, counts, cap))
            if not client_dp.within_budget(client_dp.declare(counts)):
                raise ConfigError(f"--epsilon {cfg.epsilon} is spent before the first round ends at "
                                  f"--noise_multiplier {cfg.noise_multiplier}; raise --epsilon or the noise")
        server = build_server(cfg.mode, adam_lr=cfg.adam_lr, rmsprop_lr=cfg.rmsprop_lr, dp2_interval=cfg.dp2_interval)
        self.pipeline = ReleasePipeline(cfg, server, client_dp, None, numel=flat.numel)
        # no last.pt on Flower: the sub-clients' states stay at the hospitals (in their node state)
        self.outputs = [o for o in declared_outputs(cfg, cap=cap) if o.name != "checkpoint last.pt"]
        mode = "strict" if cfg.strict_dp else "faithful (paper's code)"
        print(f"flower ({self.engine}): {len(self.sites)} hospitals: " +
              ", ".join(f"{s.facts['name']} (node {s.node}, train {s.facts['train']})" for s in self.sites), flush=True)
        print(format_report(build_report(mode=mode, accounts=self.ledger.report(accountants=()),
                                         outputs=self.outputs, threat_model=self._threat_model())), flush=True)
        check_run_folder(cfg)
        folder, _, lock = prepare_run(cfg)
        with lock:
            try:
                return self._train(folder, flat, counts, cap, sizes, mode, started)
            except BaseException:
                clear_uncheckpointed(folder)  # no checkpoint on Flower: a stopped run leaves nothing behind
                lock.remove_created_folders()
                self._say_spent()
                raise

    def _say_spent(self) -> None:
        """A stopped run writes no summary, but the rounds it charged may have been released
        to the server: say what they cost, so that a rerun can be counted with them."""
        charged = self.ledger.releases("client/subclient") if self.pipeline.client_dp is not None else 0
        if charged:
            eps = {u: self.ledger.epsilon(f"client/{u}", self.cfg.accountant) for u in ("hospital", "subclient")}
            print(f"flower server: {charged} round(s) were charged before the stop (the last may not have been "
                  f"released): epsilon {eps['hospital']:.3f} per hospital, {eps['subclient']:.3f} per sub-client "
                  f"({self.cfg.accountant}, delta {self.cfg.delta:g})", file=sys.stderr, flush=True)

    def _threat_model(self) -> str:
        who = threat_model(self.cfg)
        if self.options.secagg:
            who = ("the server sees only the SecAgg+ sum of the hospitals' clipped updates (Flower's protocol; "
                   "each hospital's own sub-clients are summed inside it) and adds the noise itself")
        return who

    def _train(self, folder, flat: FlatState, counts: list[int], cap: int, sizes: list[int], mode: str,
               started: float) -> dict:
        """fed_train.py's loop. The hospitals score round r's model with round r+1's
        message (one process start per message saved); its rows are logged then, with the
        privacy rows taken when round r ended. With --early every round is scored before
        the next starts, so no round runs past the stop."""
        cfg, pipeline = self.cfg, self.pipeline
        self.recorder = RunRecorder(folder, outputs=self.outputs)
        self.recorder.write_config(cfg.to_dict())
        params = flat.get().clone()
        rng = make_streams(cfg.seed, secure=cfg.secure_rng)
        v = cfg.virtual_clients
        self.best, self.best_params, self.rounds_since_best = {"round": None}, params.clone(), 0
        self.primary = cfg.select_metric or self.task.primary_metric
        stopped_by_budget = stopped_early = False
        rounds_run, pending = 0, None
        for site, k in zip(self.sites, counts):
            site.sizes = [site.facts["train"] // k] * k  # until it reports its split (read only by --weighted_avg)
        self.splits = [(0, counts)]
        self.bar = tqdm(range(cfg.rounds), desc=f"{cfg.data} {cfg.mode} (flower)", unit="round", dynamic_ncols=True,
                        disable=None if cfg.progress else True)
        try:
            for r in self.bar:
                declared = pipeline.declare(counts)
                if not pipeline.within_budget(declared):
                    stopped_by_budget = True
                    break
                round_start = time.perf_counter()
                params, stats, losses, scored = self._round(params, counts, v, r, rng, declared,
                                                            score=pending is not None)
                if pending is not None:
                    self._finish(pending, scored)
                new_v, rule_stats = choose_subclients(cfg, v, stats, r, cap)
                stats.update(rule_stats)
                if new_v != v:  # the hospitals re-split for the rounds after this one
                    v, counts = new_v, allocate_subclients(sizes, new_v, balance=cfg.balance_split)
                    self.splits.append((r + 1, counts))
                train_rows = [] if cfg.strict_dp else metric_rows(r, "train", losses)
                pending = (r, train_rows, self._privacy_rows(r, v, stats), params.clone(), v)
                rounds_run = r + 1
                if cfg.early:
                    self._finish(pending, self.scores(params, "val", f"round {r}: validation"))
                    pending = None
                self.round_seconds.append(time.perf_counter() - round_start)
                if cfg.early and self.rounds_since_best >= cfg.patience:
                    stopped_early = True
                    break
            if pending is not None:
                self._finish(pending, self.scores(params, "val", f"round {pending[0]}: validation"))
            self.bar.close()
            test = self.scores(self.best_params, "test", "test")
            self.best["test"] = test
            self.recorder.log(metric_rows(self.best["round"], "test", test))
            self._save_model(folder / runfiles.BEST_MODEL, flat, self.best_params, self.best["round"],
                             {"val": self.best["val"], "test": test})
            self._save_model(folder / runfiles.LAST_MODEL, flat, params, rounds_run - 1, {})
        finally:
            self.recorder.close()
        summary = self._summary(self.best, counts, v, rounds_run, stopped_early, stopped_by_budget, mode, started,
                                folder)
        self.recorder.write_summary(summary)
        return summary

    def _finish(self, pending: tuple, val: dict[str, dict]) -> None:
        """Log round r's rows and keep its model if it is the best so far (fed_train.py's rule)."""
        r, train_rows, privacy_rows, params, v = pending
        self.recorder.log(train_rows + metric_rows(r, "val", val) + privacy_rows)
        if improves(self.cfg, self.primary, self.best, val[MEAN]):
            self.best, self.best_params, self.rounds_since_best = {"round": r, "val": val}, params, 0
        else:
            self.rounds_since_best += 1
        postfix = {f"val_{self.primary}": f"{val[MEAN][self.primary]:.4f}@{r}"}
        if self.cfg.private:
            postfix.update(v=v, eps=f"{self.ledger.epsilon('client/subclient', self.cfg.accountant):.2f}")
        self.bar.set_postfix(postfix)

    def _round(self, params: torch.Tensor, counts: list[int], v: int, r: int, rng: dict, declared, *,
               score: bool) -> tuple[torch.Tensor, dict, dict, dict | None]:
        """One round; with `score`, every hospital also scores `params` (the previous round's
        model) on its val split in the same message. Returns the new parameters, the round's
        statistics, the training losses and those scores."""
        cfg, pipeline = self.cfg, self.pipeline
        keys = [s.facts["key"] for s in self.sites]
        sampled = sample_hospitals(keys, cfg.sample_rate, cfg.client_sampling, rng["sampling"],
                                   population=cfg.clients)
        pipeline.charge(declared)  # whoever was sampled
        train = sampled
        # the bound is announced with the parameters unless the paper's median reads the norms first
        one_shot = not self.options.secagg and not (pipeline.client_dp is not None and pipeline.sends_norms)
        early_bound = pipeline.server_half.clip_bound([]) if one_shot and pipeline.client_dp is not None else None
        precondition = {f"precondition.{k}": t for k, t in pipeline.server.precondition_state().items()}
        work = {}
        for h in range(len(self.sites)) if score else []:
            work[h] = ({"score": "val"}, {"params": params})
        for h in train:
            values = {"train": r, "lr": local_lr(cfg, r), "split_rounds": [first for first, _ in self.splits],
                      "split_counts": [per_h[h] for _, per_h in self.splits]}
            if one_shot:
                values.update({"send": r, **({"bound": float(early_bound)} if early_bound is not None else {})})
            work[h] = ({**work.get(h, ({}, {}))[0], **values}, {"params": params, **precondition})
        order = sorted(work)
        replies = dict(zip(order, (unpack(m.content) for m in self.exchange(
            [self.sites[h].node for h in order], "train.step", [pack(*work[h]) for h in order],
            f"round {r}" + (f" (and round {r - 1}'s validation)" if score else ""))))) if work else {}
        scored = self._collect_scores({h: replies[h][0] for h in order}) if score else None
        if not train and pipeline.client_dp is None:  # nobody sampled, no noise to release: nothing sent
            return params, {}, {}, scored
        members, num_samples, local_steps, norms, losses = [], [], [], [], {}
        for h in train:  # a fact the hospital keeps (deploy/hospital.py, round_facts) is one no step reads
            site, reply, k = self.sites[h], replies[h][0], counts[h]
            site.sizes = list(reply.get("sizes", site.sizes))
            members += [(h, j) for j in range(k)]
            num_samples += list(reply.get("num_samples", [0] * k))
            local_steps += list(reply.get("local_steps", [0] * k))
            norms += list(reply.get("norms", []))
            trained = [loss for loss, steps in zip(reply.get("losses", []), reply.get("local_steps", [])) if steps > 0]
            if trained:
                losses[site.facts["name"]] = {"loss": sum(trained) / len(trained)}
        if losses:
            losses[MEAN] = {"loss": sum(x["loss"] for x in losses.values()) / len(losses)}
        part = Participants(members, num_samples, local_steps, [s.sizes for s in self.sites], [],
                            planned_subclients=planned_subclients(cfg, v))
        rnd, max_weight = pipeline.open_round(part, r)
        norm_messages = [pipeline.observed(Message(NORM, m, r, torch.tensor(n))) for m, n in zip(members, norms)] \
            if pipeline.sends_norms else []
        announced = pipeline.announce(rnd, part, max_weight, norm_messages, rng["noise"])
        step = not is_probe_round(cfg, r)
        if self.options.secagg:
            from deploy.secagg import secure_sum
            weights = {m: float(w) for m, w in zip(members, rnd.weights)}
            per_node = [[weights[(h, k)] for k in range(counts[h])] for h in train]
            total, sides, received = secure_sum(self.grid, self, [self.sites[h].node for h in train], per_node, r,
                                                announced.bound, params.numel())
            self.secagg_inputs.append(received)
            params, stats = pipeline.release(params, rnd, part, announced, total, sides, sides["clipped_norm"], {},
                                             received, step=step)
        else:
            if not one_shot:  # the bound, from the norm messages: a second message
                sends = self.exchange([self.sites[h].node for h in train], "train.step",
                                      [pack({"send": r, "bound": float(announced.bound)}) for _ in train],
                                      f"round {r}: sending updates")
                replies.update({h: unpack(m.content) for h, m in zip(train, sends)})
            messages = []
            for h in train:
                tensors = replies[h][1]
                for k in range(counts[h]):
                    shares = {name: tensors[name][k] for name in ("clipped_norm", "within_bound") if name in tensors}
                    messages.append(pipeline.observed(Message(UPDATE, (h, k), r, tensors["updates"][k], shares)))
            params, stats = pipeline.close_round(params, rnd, part, announced, messages, step=step)
        if not bool(torch.isfinite(params).all()):
            raise Diverged(f"training diverged in round {r}: the server step made the model non-finite "
                           f"(--mode {cfg.mode}); lower the server learning rate (--adam_lr / --rmsprop_lr) or --lr")
        return params, stats, losses, scored

    def scores(self, params: torch.Tensor, split: str, what: str) -> dict[str, dict]:
        """Each hospital scores `params` on its own split."""
        nodes = [s.node for s in self.sites]
        replies = self.exchange(nodes, "train.step", [pack({"score": split}, {"params": params}) for _ in nodes], what)
        return self._collect_scores({h: unpack(r.content)[0] for h, r in enumerate(replies)})

    def _collect_scores(self, replies: dict[int, dict]) -> dict[str, dict]:
        """Per hospital and their unweighted mean, as federated/evaluate.py's."""
        results = {self.sites[h].facts["name"]: {k[6:]: x for k, x in reply.items() if k.startswith("score.")}
                   for h, reply in sorted(replies.items())}
        metrics = next(iter(results.values())).keys()
        results[MEAN] = {m: nanmean([r[m] for r in results.values()]) for m in metrics}
        return results

    def _privacy_rows(self, r: int, v: int, stats: dict) -> list[dict]:
        values = {"v": float(v), **{k: float(x) for k, x in stats.items()}}
        if self.pipeline.client_dp is not None:
            for unit in UNITS:
                values[f"epsilon_{unit}"] = self.ledger.epsilon(f"client/{unit}", self.cfg.accountant)
        return metric_rows(r, "privacy", {"server": values})

    def _save_model(self, path, flat: FlatState, params: torch.Tensor, round_idx: int, metrics: dict) -> None:
        flat.set(params)
        from federated.loop import CHECKPOINT_VERSION
        io.torch_save({"version": CHECKPOINT_VERSION, "config": self.cfg.to_dict(), "round": round_idx,
                       "model": self.model.state_dict(), "metrics": metrics}, path)

    def _summary(self, best: dict, counts: list[int], v: int, rounds_run: int, stopped_early: bool,
                 stopped_by_budget: bool, mode: str, started: float, folder) -> dict:
        cfg = self.cfg
        primary = self.task.primary_metric
        wall = time.perf_counter() - started
        summary = {
            "model_selection": "final round (--strict_dp)" if cfg.strict_dp else
            f"best validation {cfg.select_metric or primary}",
            "data": cfg.data, "mode": cfg.mode, "primary_metric": primary, "rounds_run": rounds_run,
            "stopped_early": stopped_early, "stopped_by_budget": stopped_by_budget, "best_round": best["round"],
            "final_v": v, "val": best["val"][MEAN], "test": best["test"][MEAN],
            "val_per_hospital": {k: x for k, x in best["val"].items() if k != MEAN},
            "test_per_hospital": {k: x for k, x in best["test"].items() if k != MEAN},
            "subclients_per_hospital": counts,
            "timing": {"wall_s": wall, "round_s": self.round_seconds,
                       "mean_round_s": sum(self.round_seconds) / max(len(self.round_seconds), 1)},
            "flower": {"engine": self.engine, "hospitals": [s.facts["name"] for s in self.sites],
                       "nodes": [s.node for s in self.sites], "secagg": self.options.secagg,
                       **({"secagg_inputs": self.secagg_inputs} if self.options.secagg else {})},
            "wall_s": wall, "run_dir": str(folder),
        }
        summary["privacy_report"] = build_report(mode=mode, accounts=self.ledger.report(), outputs=self.outputs,
                                                threat_model=self._threat_model())
        if self.pipeline.client_dp is not None:
            summary["privacy"] = client_privacy(cfg, self.pipeline.client_dp, self.ledger, summary["privacy_report"])
        return summary


