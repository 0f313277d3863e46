"""The round loop (docs/design.md, "One round").

global params -> each participating sub-client's local update (a delta, from its own keyed
generator) -> stack [K, P] -> the release pipeline (federated/pipeline.py: messages,
combine, finalize, server step; every release charged to the ledger) -> (intermediary
rule) -> evaluate on
every hospital's val set, keeping the best round's parameters; after the last round the
test set is scored once, for the best round. All state that a later round depends on
lives in RunState and is saved in last.pt every --ckpt_every rounds, so --resume ends where
an uninterrupted run ends. The sub-clients are trained by the run's engine
(federated/engine.py); their Adam states are rows of one stacked store (federated/adam.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from datasets.base import Shard
from federated.config import Config, ConfigError
from federated.errors import Diverged
from federated.evaluate import MEAN, eval_set, evaluate, evaluate_fairness
from federated.journal import ReleaseJournal
from federated.adam import SubclientMoments
from federated.canaries import canary_bound, planned_subclients
from federated.engine import Job
from federated.local import LocalResult
from federated.personalize import personalize
from federated.pipeline import Participants
from federated.sampling import sample_hospitals
from federated.setup import Federation, check_subclients
from federated.subclients import allocate_subclients, paper_split, split_generator, split_hospitals
from privacy.client_dp import DeclaredRound
from privacy.events import UNITS
from privacy.intermediary import next_subclients, split_factor
from privacy.sample_dp import charge_round
from utils import io, runfiles
from utils.metrics import is_better
from utils.results import RunRecorder, metric_rows
from utils.seeding import client_generator, make_streams

# 4: stacked Adam state, dropped at the end unless --keep_optimizer; 5: in_order; 6: releases with
# their kind in the ledger, the paper split keyed per hospital, the release journal's length
CHECKPOINT_VERSION = 6


@dataclass
class RunState:
    next_round: int
    params: torch.Tensor
    subclient_counts: list[int]
    subclient_indices: list[list[torch.Tensor]]
    moments: SubclientMoments | None  # None with --reset_optimizer
    rng: dict[str, torch.Generator]
    secret: bytes  # key of the sub-client assignment hash
    v: int = 1  # sub-clients per hospital requested (adaptive with --ada_vn / --init_vn)
    best: dict = field(default_factory=lambda: {"round": None})
    best_params: torch.Tensor | None = None
    rounds_since_best: int = 0
    timing: dict = field(default_factory=lambda: {"local_s": 0.0, "eval_s": 0.0, "total_s": 0.0})
    moments_dropped: bool = False  # a finished run's last.pt without the Adam state
    in_order: bool = False  # --subclient_split paper after a re-split: record order, last partial batch kept
    journal_length: int = 0  # --secure_rng: rounds of the release journal that the ledger holds

    def state_dict(self, *, keep_moments: bool = True) -> dict:
        moments = self.moments.state_dict() if self.moments is not None and keep_moments else None
        return {
            "next_round": self.next_round, "params": self.params.cpu(),
            "subclient_counts": self.subclient_counts, "subclient_indices": self.subclient_indices,
            "moments": moments, "moments_dropped": self.moments is not None and not keep_moments,
            "rng": {k: g.get_state() for k, g in self.rng.items()},
            "secret": self.secret, "v": self.v, "best": self.best, "in_order": self.in_order,
            "best_params": None if self.best_params is None else self.best_params.cpu(),
            "rounds_since_best": self.rounds_since_best,
            "timing": self.timing, "journal_length": self.journal_length,
        }

    @staticmethod
    def from_state_dict(state: dict, device: torch.device) -> "RunState":
        rng = {}
        for name, gen_state in state["rng"].items():
            rng[name] = torch.Generator()
            rng[name].set_state(gen_state)
        best_params = state["best_params"]
        moments = None if state["moments"] is None else SubclientMoments.from_state_dict(state["moments"], device)
        return RunState(state["next_round"], state["params"].to(device), state["subclient_counts"],
                        state["subclient_indices"], moments, rng, state["secret"], state["v"],
                        state["best"], None if best_params is None else best_params.to(device),
                        state["rounds_since_best"], state["timing"], state["moments_dropped"], state["in_order"],
                        state["journal_length"])


def initial_state(fed: Federation) -> RunState:
    cfg = fed.cfg
    rng = make_streams(cfg.seed, secure=cfg.secure_rng)
    counts = check_subclients(cfg, fed.data)
    indices = draw_split(fed, fed.secret, counts, first_round=0)
    params = fed.trainer.flat.get()
    moments = None if cfg.reset_optimizer else \
        SubclientMoments.fresh(counts, params.numel(), dtype=params.dtype, device=params.device)
    return RunState(0, params, counts, indices, moments, rng, fed.secret, v=cfg.virtual_clients)


def draw_split(fed: Federation, secret: bytes, counts: list[int], *, first_round: int) -> list[list[torch.Tensor]]:
    """Each hospital's sub-clients as index sets: by the keyed hash, or (--subclient_split
    paper) the paper's random equal parts, drawn from the secret and the first round they
    train in, so a resumed run draws the same split."""
    if fed.cfg.subclient_split == "hash":
        return split_hospitals(fed.record_keys, counts)
    return [paper_split(len(h.train), c, split_generator(secret, first_round, h.key))
            for h, c in zip(fed.data.hospitals, counts)]


def resplit(fed: Federation, state: RunState, v: int, *, round_idx: int) -> None:
    """Split every hospital into `v` sub-clients for the rounds after `round_idx`; each
    hospital's sub-client Adam states are averaged into its new ones."""
    state.v = v
    counts = allocate_subclients([len(h.train) for h in fed.data.hospitals], v, balance=fed.cfg.balance_split)
    state.subclient_indices = draw_split(fed, state.secret, counts, first_round=round_idx + 1)
    state.in_order = fed.cfg.subclient_split == "paper"  # the paper's re-split loaders do not shuffle
    if state.moments is not None:
        state.moments = state.moments.resplit(counts)
    state.subclient_counts = counts


def subclient_data(fed: Federation, state: RunState) -> list[list[Shard]]:
    """Each sub-client's data as indices into its hospital's training split (no copies)."""
    return [[Shard(h.train, idx.to(fed.device)) for idx in per_h]
            for h, per_h in zip(fed.data.hospitals, state.subclient_indices)]


def local_lr(cfg: Config, round_idx: int) -> float:
    return cfg.lr * (cfg.lr_decay ** round_idx if cfg.lr_decay > 0 else 1.0)


def is_probe_round(cfg: Config, round_idx: int) -> bool:
    """With --ada_vn / --init_vn, round 0 only measures the noise-to-signal ratio: its
    aggregate is discarded (but the release is still charged to the ledger)."""
    return cfg.adaptive_subclients and round_idx == 0


def local_updates(fed: Federation, state: RunState, shards: list[list[Shard]], members: list[tuple[int, int]],
                  round_idx: int) -> tuple[torch.Tensor, list[LocalResult]]:
    """Each member sub-client (hospital h, sub-client k) trains from the global params with
    its own generator, keyed by (seed, round, h, k); returns the stacked deltas [K, P] and
    the local results. Adam states are kept per sub-client unless --reset_optimizer."""
    if not members:  # Poisson sampling picked no hospital
        return state.params.new_zeros((0, state.params.numel())), []
    start = time.perf_counter()
    lr = local_lr(fed.cfg, round_idx)
    keys = [h.key for h in fed.data.hospitals]
    jobs = [Job(h, k, shards[h][k], client_generator(fed.cfg.seed, round_idx, keys[h], k), in_order=state.in_order)
            for h, k in members]
    deltas, results = fed.engine.train(state.params, jobs, state.moments, lr)
    state.timing["local_s"] += time.perf_counter() - start
    check_finite(fed, deltas, results, members, round_idx, lr)
    return deltas, results


def check_finite(fed: Federation, deltas: torch.Tensor, results: list[LocalResult], members: list[tuple[int, int]],
                 round_idx: int, lr: float) -> None:
    """Stop at the first non-finite loss or update: later rounds would average NaN. One
    check over the stacked deltas (no per-sub-client device sync); the culprit is looked
    up only when it fails: a NaN or inf anywhere makes the sum non-finite (one pass, no mask)."""
    if math.isfinite(float(deltas.sum())) and all(math.isfinite(r.loss) for r in results if r.num_steps > 0):
        return
    finite_rows = torch.isfinite(deltas).all(dim=1)  # the sum can also overflow on finite rows
    for row, ((h, k), r) in enumerate(zip(members, results)):
        what = "loss" if r.num_steps > 0 and not math.isfinite(r.loss) else \
            "update" if not bool(finite_rows[row]) else None
        if what:
            raise Diverged(f"training diverged in round {round_idx}: {fed.data.hospitals[h].name} sub-client {k} "
                           f"produced a non-finite {what} (local --lr {lr:g}); lower --lr")


def by_hospital(fed: Federation, members: list[tuple[int, int]], values: list) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for (h, _), value in zip(members, values):
        grouped.setdefault(fed.data.hospitals[h].name, []).append(value)
    return grouped


def run_round(fed: Federation, state: RunState, shards: list[list[Shard]], round_idx: int,
              declared: DeclaredRound | None = None) -> tuple[dict, dict]:
    """One communication round; updates `state` in place. Returns (train losses per
    hospital, round statistics). Under client-level DP the round releases its noise and
    steps even when the sampling drew nobody: an empty round must look like any other.
    `declared`: the round's releases as the budget check read them (declared here if None)."""
    cfg = fed.cfg
    if declared is None:
        declared = fed.pipeline.declare(state.subclient_counts)
    keys = [h.key for h in fed.data.hospitals]
    hospitals = sample_hospitals(keys, cfg.sample_rate, cfg.client_sampling, state.rng["sampling"],
                                 population=cfg.clients)
    members = [(h, k) for h in hospitals for k in range(state.subclient_counts[h])]
    deltas, results = local_updates(fed, state, shards, members, round_idx)
    if fed.trainer.sample_dp is not None:  # DP-SGD steps each hospital took
        charge_round(fed.ledger, fed.trainer.sample_dp.noise_multiplier,
                     by_hospital(fed, members, [(r.sample_rate, r.num_steps) for r in results]))
    fed.pipeline.charge(declared)  # whoever was sampled
    canaries, canary_rows = fed.canaries.round_rows(round_idx, cfg.sample_rate, state.params.numel(),
                                                    canary_bound(cfg), device=state.params.device) \
        if fed.canaries is not None else ([], None)
    if not members and not canaries and fed.client_dp is None:  # nobody sampled, no noise to release: nothing sent
        return {}, {}
    # a canary sends as (its own hospital key, sub-client): keyed like any hospital, never one of them
    generators = [client_generator(cfg.seed, round_idx, keys[h], k, purpose="local_noise") for h, k in members] + \
        [client_generator(cfg.seed, round_idx, key, k, purpose="local_noise") for key, k in canaries]
    part = Participants(members + canaries, [r.num_samples for r in results] + [1] * len(canaries),
                        [r.num_steps for r in results] + [1] * len(canaries),
                        [[len(s) for s in per_h] for per_h in shards], generators,
                        planned_subclients=planned_subclients(cfg, state.v), canaries=len(canaries))
    if canaries:
        deltas = torch.cat([deltas, canary_rows])
    state.params, stats = fed.pipeline.round(state.params, deltas, part, round_idx, state.rng["noise"],
                                             step=not is_probe_round(cfg, round_idx))
    if not bool(torch.isfinite(state.params).all()):
        raise Diverged(f"training diverged in round {round_idx}: the server step made the model non-finite "
                       f"(--mode {cfg.mode}); lower the server learning rate (--adam_lr / --rmsprop_lr) or --lr")
    losses = by_hospital(fed, [m for m, r in zip(members, results) if r.num_steps > 0],
                         [r.loss for r in results if r.num_steps > 0])
    per_hospital = {name: {"loss": sum(v) / len(v)} for name, v in losses.items()}
    if per_hospital:
        per_hospital[MEAN] = {"loss": sum(r["loss"] for r in per_hospital.values()) / len(per_hospital)}
    return per_hospital, stats


def adapt_subclients(fed: Federation, state: RunState, stats: dict, round_idx: int) -> dict:
    """The adaptive intermediary rule: choose v for the next round and re-split if it changed.
    A re-split averages each hospital's sub-client Adam states and hands the average to its
    new sub-clients, as the paper's code does."""
    new_v, rule_stats = choose_subclients(fed.cfg, state.v, stats, round_idx, fed.subclient_cap)
    if new_v != state.v:
        resplit(fed, state, new_v, round_idx=round_idx)
    return rule_stats


def choose_subclients(cfg: Config, v: int, stats: dict, round_idx: int, cap: int) -> tuple[int, dict]:
    """The rule alone: the next round's v, and the statistics it logs. It reads the expected
    noise norm (public), never the realised noise, and only released (or, outside
    --strict_dp, declared) round statistics, so a deployment's server runs it as it is."""
    if not cfg.adaptive_subclients or (cfg.init_vn and round_idx > 0) or not stats:
        return v, {}
    if not cfg.strict_dp and stats["norm_sum"] == 0:
        return v, {}  # the paper's rule reads the updates' norms: a round that sampled nobody has none
    factor = split_factor(noise_norm=stats["expected_noise_norm"], aggregate_norm=stats["aggregate_norm"],
                          norm_sum=max(stats["norm_sum"], 1e-12), num_hospitals=cfg.clients)
    variant = "stable" if cfg.ada_stable else "prog" if cfg.ada_prog else "default"
    return next_subclients(v, factor, variant=variant, v_max=cap), {"split_factor": factor}


def privacy_rows(fed: Federation, state: RunState, round_idx: int, stats: dict) -> list[dict]:
    """Per-round privacy and intermediary log (hospital = "server", split = "privacy").
    Only released or public quantities, and those the report declares as not covered."""
    cfg = fed.cfg
    values = {"v": float(state.v), **{k: float(v) for k, v in stats.items()}}
    if fed.client_dp is not None:
        for unit in UNITS:
            values[f"epsilon_{unit}"] = fed.ledger.epsilon(f"client/{unit}", cfg.accountant)
    if fed.trainer.sample_dp is not None:
        values["epsilon_sample_max"] = fed.ledger.max_epsilon("sample", "record", cfg.accountant)
    if fed.local_update_dp is not None:
        values["epsilon_local_max"] = fed.ledger.max_epsilon("local", "subclient", cfg.accountant)
        values["epsilon_local_hospital_max"] = fed.ledger.max_epsilon("local", "hospital", cfg.accountant)
    return metric_rows(round_idx, "privacy", {"server": values})


def save_checkpoint(path: Path, fed: Federation, state: RunState, *, final: bool = False) -> None:
    """last.pt. The final one of a run drops the sub-clients' Adam state (S x 3 x P floats:
    13 GB at the paper's RSNA-ICH size) unless --keep_optimizer: nothing needs it once the
    run has ended, except extending it with more rounds."""
    client_dp = fed.client_dp.state_dict() if fed.client_dp is not None else None
    keep = not final or fed.cfg.keep_optimizer
    io.torch_save({"version": CHECKPOINT_VERSION, "config": fed.cfg.to_dict(),
                   "state": state.state_dict(keep_moments=keep),
                   "server": fed.server.state_dict(), "client_dp": client_dp, "ledger": fed.ledger.state_dict()},
                  path)


def save_model(path: Path, fed: Federation, params: torch.Tensor, round_idx: int, metrics: dict) -> None:
    fed.trainer.flat.set(params)
    io.torch_save({"version": CHECKPOINT_VERSION, "config": fed.cfg.to_dict(), "round": round_idx,
                   "model": fed.model.state_dict(), "metrics": metrics}, path)


def personalized(fed: Federation, params: torch.Tensor, round_idx: int) -> list[torch.Tensor]:
    """Each hospital's model adapted on its own training split (federated/personalize.py)."""
    cfg = fed.cfg
    return personalize(fed.trainer, params, [h.train for h in fed.data.hospitals], [h.key for h in fed.data.hospitals],
                       steps=cfg.personalize_steps, alpha=cfg.alpha, batch=cfg.batch, seed=cfg.seed,
                       round_idx=round_idx)


def improves(cfg: Config, primary: str, best: dict, val_mean: dict) -> bool:
    """Whether this round's validation scores replace the kept round: always under
    --strict_dp (choosing a round by the hospitals' unnoised validation scores would be a
    release of its own), and while no round has had a finite score."""
    best_val = best.get("val", {}).get(MEAN, {}).get(primary, math.nan)
    return cfg.strict_dp or math.isnan(best_val) or is_better(primary, val_mean[primary], best_val)


def selection_metric(fed: Federation) -> str:
    return fed.cfg.select_metric or fed.task.primary_metric


def train(fed: Federation, recorder: RunRecorder, state: RunState, *, started: float | None = None,
          journal: ReleaseJournal | None = None) -> dict:
    """Run rounds state.next_round .. cfg.rounds-1 and return the run summary. `started`
    (time.perf_counter()) is when this process began the run: the wall time of a resumed
    run adds this process's time to what the checkpoint recorded. `journal` (--secure_rng)
    receives each round's charges before any of the round's outputs is written."""
    cfg, task = fed.cfg, fed.task
    started = time.perf_counter() if started is None else started
    wall_before = state.timing.get("wall_s", 0.0)

    def checkpoint(final: bool = False) -> None:
        start = time.perf_counter()
        state.timing["wall_s"] = wall_before + start - started
        state.journal_length = len(journal) if journal is not None else 0
        recorder.flush()  # metrics.csv first: rows past the checkpoint are dropped on resume
        save_checkpoint(recorder.dir / runfiles.CHECKPOINT, fed, state, final=final)
        spent = time.perf_counter() - start
        state.timing["checkpoint_s"] = state.timing.get("checkpoint_s", 0.0) + spent
        if final:  # the in-loop ones fall inside their round's time
            state.timing["total_s"] += spent

    primary = selection_metric(fed)
    val_splits = eval_set(fed.data, "val", merge=cfg.merge, batch=cfg.batch)
    test_splits = eval_set(fed.data, "test", merge=cfg.merge, batch=cfg.batch)
    shards = subclient_data(fed, state)
    stopped_early = False
    bar = tqdm(range(state.next_round, cfg.rounds), initial=state.next_round, total=cfg.rounds,
               desc=f"{cfg.data} {cfg.mode}", unit="round", dynamic_ncols=True,
               disable=None if cfg.progress else True)  # None: drawn on a terminal only
    stopped_by_budget = False
    for r in bar:
        declared = fed.pipeline.declare(state.subclient_counts)
        if not fed.pipeline.within_budget(declared):
            stopped_by_budget = True  # --dp_mode bounded: the next round would exceed --epsilon
            break
        round_start = time.perf_counter()
        charged = fed.ledger.mark()
        train_losses, stats = run_round(fed, state, shards, r, declared)
        if journal is not None:  # before anything of the round is written or shown
            journal.record(r, fed.ledger.since(charged))
        counts_before = state.subclient_counts
        stats.update(adapt_subclients(fed, state, stats, r))
        if state.subclient_counts is not counts_before:  # the rule re-split the hospitals
            shards = subclient_data(fed, state)
        eval_start = time.perf_counter()
        val = evaluate(fed.model, fed.trainer.flat, state.params, val_splits, task)
        val_personal = evaluate(fed.model, fed.trainer.flat, personalized(fed, state.params, r), val_splits, task) \
            if cfg.personalize_steps else None
        if primary not in val[MEAN]:
            raise ConfigError(f"--select_metric {primary} is not a metric of this task; choose one of "
                              f"{', '.join(val[MEAN])}")
        # --strict_dp: hospitals send nothing but the noised update, so no training losses.
        rows = [] if cfg.strict_dp else metric_rows(r, "train", train_losses)
        rows += metric_rows(r, "val", val)
        rows += metric_rows(r, "val_personal", val_personal) if val_personal else []
        rows += privacy_rows(fed, state, r, stats)
        # --strict_dp selects the final model: choosing a round by the hospitals' unnoised
        # validation scores would be a release of its own. The val curves stay as diagnostics.
        # Without a finite validation score so far (e.g. single-class validation splits), the
        # latest round is kept.
        if improves(cfg, primary, state.best, val[MEAN]):
            # Keep the parameters; the test set is scored once, at the end, for the best round.
            state.best = {"round": r, "val": val, **({"val_personal": val_personal} if val_personal else {})}
            state.best_params = state.params.clone()
            state.rounds_since_best = 0
        else:
            state.rounds_since_best += 1
        state.timing["eval_s"] += time.perf_counter() - eval_start
        recorder.log(rows)
        state.next_round = r + 1
        stopped_early = cfg.early and state.rounds_since_best >= cfg.patience
        if state.next_round % cfg.ckpt_every == 0 and state.next_round < cfg.rounds:
            # The checkpoint stores the round's time with the round: a resume adds to totals
            # that cover the local and evaluation time they hold.
            state.timing["total_s"] += time.perf_counter() - round_start
            round_start = time.perf_counter()
            checkpoint()  # the last round's is written below, with the run's end
        state.timing["total_s"] += time.perf_counter() - round_start
        postfix = {f"val_{primary}": f"{val[MEAN][primary]:.4f}",
                   "best": f"{state.best['val'][MEAN][primary]:.4f}@{state.best['round']}"}
        if cfg.private:
            eps = next(row["value"] for row in rows if row["metric"] == "epsilon_subclient")
            postfix.update(v=state.v, eps=f"{eps:.2f}")
        bar.set_postfix(postfix)
        if stopped_early:
            break
    bar.close()
    checkpoint(final=True)  # however the loop ended (rounds, --early, budget)
    test = evaluate(fed.model, fed.trainer.flat, state.best_params, test_splits, task)
    state.best["test"] = test
    recorder.log(metric_rows(state.best["round"], "test", test))
    if cfg.personalize_steps:  # the selected round's model, adapted as its validation scores were
        personal = personalized(fed, state.best_params, state.best["round"])
        state.best["test_personal"] = evaluate(fed.model, fed.trainer.flat, personal, test_splits, task)
        recorder.log(metric_rows(state.best["round"], "test_personal", state.best["test_personal"]))
    fairness = evaluate_fairness(fed.model, fed.trainer.flat, state.best_params, val_splits, test_splits, task,
                                 fed.data.attribute_groups, fed.data.label_names, resamples=cfg.bootstrap,
                                 seed=cfg.seed)
    if fairness:
        state.best["fairness"] = fairness
        for part, split in (("value", "test_fairness"), ("low", "test_fairness_low"), ("high", "test_fairness_high")):
            values = {name: m[part] for name, m in fairness["metrics"].items()}
            recorder.log(metric_rows(state.best["round"], split, {"all": values}))
    save_model(recorder.dir / runfiles.BEST_MODEL, fed, state.best_params, state.best["round"],
               {"val": state.best["val"], "test": test})
    save_model(recorder.dir / runfiles.LAST_MODEL, fed, state.params, state.next_round - 1, {})
    state.timing["wall_s"] = wall_before + time.perf_counter() - started
    return build_summary(fed, state, stopped_early, stopped_by_budget)


def build_summary(fed: Federation, state: RunState, stopped_early: bool, stopped_by_budget: bool = False) -> dict:
    timing = dict(state.timing)
    total = max(timing["total_s"], 1e-9)
    timing.setdefault("checkpoint_s", 0.0)
    timing["overhead_s"] = total - timing["local_s"] - timing["eval_s"] - timing["checkpoint_s"]
    timing["overhead_fraction"] = timing["overhead_s"] / total
    timing["outside_local_fraction"] = 1 - timing["local_s"] / total
    best = state.best
    primary = selection_metric(fed)
    if fed.cfg.strict_dp:
        selection = "final round (--strict_dp)"
    elif math.isnan(best["val"][MEAN].get(primary, math.nan)):
        selection = (f"last round: validation {primary} was not finite in any round (single-class validation "
                     "splits?)")
    else:
        selection = f"best validation {primary}"
    return {
        "model_selection": selection,
        "data": fed.cfg.data, "mode": fed.cfg.mode, "primary_metric": fed.task.primary_metric,
        "rounds_run": state.next_round, "stopped_early": stopped_early, "stopped_by_budget": stopped_by_budget,
        "best_round": best["round"], "final_v": state.v,
        "val": best["val"][MEAN], "test": best["test"][MEAN],
        "val_per_hospital": {k: v for k, v in best["val"].items() if k != MEAN},
        "test_per_hospital": {k: v for k, v in best["test"].items() if k != MEAN},
        **({"val_personal": best["val_personal"][MEAN], "test_personal": best["test_personal"][MEAN],
            "val_personal_per_hospital": {k: v for k, v in best["val_personal"].items() if k != MEAN},
            "test_personal_per_hospital": {k: v for k, v in best["test_personal"].items() if k != MEAN}}
           if "test_personal" in best else {}),
        "subclients_per_hospital": state.subclient_counts, "timing": timing,
        "subclient_sizes": [[len(i) for i in per_h] for per_h in state.subclient_indices],
        **({"fairness": best["fairness"]} if "fairness" in best else {}),
    }
