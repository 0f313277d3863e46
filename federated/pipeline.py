"""One round's release, as the two halves of a deployment: deltas in at the sub-clients,
new global parameters out at the server.

`ClientHalf`, at each sub-client, is given its own delta (one row) and the round's public
facts, and returns the messages it sends:
    precondition (server optimizer: FedNova, DP2-RMSProp) -> local noise (--dp_level
    update_local: its own clip and noise) -> [its norm, outside --strict_dp and secure
    aggregation] -> clip (client-level DP; under --secure_agg also the ring's bound --S)
    -> encode (plain; under --secure_agg secagg+ weighted, with its side values, into the
    ring; under ckks|cyclic weighted, with its side values, as the float64 input that is
    encrypted, its Gaussian share added first with --noise_at clients).
`ServerHalf` sees only messages:
    clip bound (from values already released, or the paper's median of the norm messages)
    -> combine (the one weighted sum of the update messages; under --secure_agg SecAgg+
    over the ring inputs, privacy/secagg/, or the sum of ciphertexts the hospitals decrypt,
    privacy/he/) -> finalize (central noise, fixed denominators, privacy/client_dp.py; with
    --noise_at clients the shares are the noise) -> server step.

Every message passes the read-only hooks in `ReleasePipeline.hooks` on its way out
(federated/messages.py): what they see is what leaves the clients. The simulation calls
the client half once per sub-client; the Flower deployment (deploy/) calls it at each
hospital for its own rows, between the server's phases. The round loop calls
`ReleasePipeline.round` and holds no privacy policy: which weights, which noise std and
which releases to charge are decided here and in privacy/.
Under client-level DP a round with no participant (K = 0) still releases its noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from federated.config import Config
from federated.errors import AggregationAborted
from federated.messages import NORM, UPDATE, Message, MessageHook
from federated.server import FedAvgServer, ServerRound
from privacy.client_dp import ClientLevelDP, DeclaredRound, RoundPlan, client_message
from privacy.local_update_dp import LocalUpdateDP
from privacy.mechanism import update_norms, weighted_sum
from federated.encrypted_release import SharesRelease, ShareRound
from federated.secure_release import SecureRelease
from privacy.he.aggregate import CyclicAbort, EncryptedAggregation
from privacy.he.shares import GaussianShares, gaussian_share
from privacy.secagg.aggregate import SIDES, RingRound, SecureAggregation
from privacy.secagg.distributed import DistributedNoise
from privacy.secagg.protocol import SecAggAbort
from privacy.secagg.ring import RingCode


@dataclass
class Participants:
    """Who sent an update this round, and the public facts about the whole federation."""
    members: list[tuple[int, int]]   # (hospital, sub-client) of each row
    num_samples: list[int]           # records of each member sub-client
    local_steps: list[int]           # local optimizer steps of each member
    all_sizes: list[list[int]]       # records of every sub-client of every hospital (sampled or not)
    generators: list[torch.Generator]  # each member's own generator (local update DP noise)
    planned_subclients: int          # sub-clients of the planned federation (-N times v, canaries too): public
    canaries: int = 0                # the last rows are an audit's canaries (federated/canaries.py): no ledger


def round_weights(num_samples: list[int], *, weighted: bool) -> torch.Tensor:
    """Non-private aggregation weights for K updates: 1/K each (the paper's default), or
    n_k / sum n with --weighted_avg (McMahan et al., 2017, Alg. 1)."""
    counts = torch.tensor(num_samples, dtype=torch.float32)
    if weighted:
        return counts / counts.sum()
    return torch.full_like(counts, 1.0 / len(num_samples))


def private_weights(cfg: Config, part: Participants) -> tuple[torch.Tensor, float]:
    """Weights with fixed denominators: they, and the largest weight that sets the noise
    std, depend on the planned federation and the sampling rate, never on who was sampled
    (nor on whether one hospital is there at all). Uniform: 1 / (q * planned sub-clients).
    --weighted_avg (q = 1 only; declared not covered): n_k / all records."""
    if cfg.weighted_avg:
        total = sum(sum(sizes) for sizes in part.all_sizes)
        largest = max(max(sizes) for sizes in part.all_sizes)
        return torch.tensor(part.num_samples, dtype=torch.float32) / total, largest / total
    denominator = cfg.sample_rate * part.planned_subclients
    return torch.full((len(part.members),), 1.0 / denominator), 1.0 / denominator


@dataclass
class ClientRound:
    """The public facts a sub-client needs to prepare and send its update."""
    index: int
    server: ServerRound       # this sub-client's weight and local steps (a one-row ServerRound)
    # its own generator, keyed by its hospital's key: local update DP's noise, or secure
    # aggregation's rounding and noise share (the two never run together)
    noise_gen: torch.Generator | None


class Announcement(NamedTuple):
    """What the server announces after the norm messages and before the update messages."""
    bound: float | None        # this round's clip bound C (None without DP or a ring)
    plan: RoundPlan | None     # the release's public facts (client-level DP)
    norms: list[Message]       # the norm messages it was computed from (outside --strict_dp)
    ring: RingRound | None     # --secure_agg secagg+: the ring's parameters
    shares: ShareRound | None  # --noise_at clients with encryption: the shares' sizes


class ClientHalf:
    """What one sub-client computes from its own delta. Every method takes one row: a
    sub-client can read nothing of another's update."""

    def __init__(self, server: FedAvgServer, client_dp: ClientLevelDP | None, local_dp: LocalUpdateDP | None,
                 secure: SecureAggregation | None = None, *, encrypted: bool = False, secure_rng: bool = False):
        self.server, self.client_dp, self.local_dp, self.secure = server, client_dp, local_dp, secure
        self.encrypted, self.secure_rng = encrypted, secure_rng

    def prepare(self, row: torch.Tensor, rnd: ClientRound) -> torch.Tensor:
        """precondition -> local update DP: the update as it will be clipped and sent."""
        _one_row(row)
        row = self.server.precondition(row[None], rnd.server)[0]
        if self.local_dp is not None:
            row = self.local_dp.privatize_row(row, rnd.noise_gen)
        return row

    def norm_message(self, prepared: torch.Tensor, sender: tuple[int, int], rnd: ClientRound) -> Message:
        """Outside --strict_dp: the norm the paper's code reads (its median clip, its statistics)."""
        return Message(NORM, sender, rnd.index, update_norms(prepared[None])[0])

    def send(self, prepared: torch.Tensor, sender: tuple[int, int], rnd: ClientRound, bound: float | None,
             ring: RingRound | None = None, shares: ShareRound | None = None) -> Message:
        """clip (client-level DP, to the bound the server announced) -> encode; with the
        round's `ring`, the secure aggregation input; under encryption, the input to encrypt
        (with the round's `shares`, its Gaussian share added)."""
        _one_row(prepared)
        if ring is not None:
            return self._secure_input(prepared, sender, rnd, bound, ring)
        if self.encrypted:
            return self._encrypted_input(prepared, sender, rnd, bound, shares)
        if self.client_dp is None:
            return Message(UPDATE, sender, rnd.index, self.encode(prepared))
        share = client_message(prepared, bound)
        return Message(UPDATE, sender, rnd.index, self.encode(share.update),
                       {"clipped_norm": share.clipped_norm, "within_bound": share.within_bound})

    @staticmethod
    def encode(update: torch.Tensor) -> torch.Tensor:
        """Plain: the server receives the update as it is."""
        return update

    def _secure_input(self, prepared: torch.Tensor, sender: tuple[int, int], rnd: ClientRound, bound: float,
                      ring: RingRound) -> Message:
        """clip to `bound` -> weight -> append the side values (clipped norm, within-bound
        bit; with the noise at the clients the norm times w a, and no bit) -> quantise into
        the ring (-> add the noise share). The message carries the protocol's input; what
        the server receives of it is masked (privacy/secagg/protocol.py)."""
        share = client_message(prepared, bound)
        weight = rnd.server.weights[0]
        sides = (float(share.clipped_norm), float(share.within_bound)) if ring.side_scale is None else \
            (float(share.clipped_norm) * ring.side_scale, 0.0)
        encoded = self.secure.encode(ring, share.update * weight, sides, rnd.noise_gen)
        return Message(UPDATE, sender, rnd.index, torch.from_numpy(encoded.view(np.int64)))


    def _encrypted_input(self, prepared: torch.Tensor, sender: tuple[int, int], rnd: ClientRound,
                         bound: float | None, shares: ShareRound | None) -> Message:
        """weight (-> clip to `bound`, append the side values: clipped norm and within-bound
        bit, or with `shares` the norm times w a and 0 -> clip again in float64 to the norm
        the charge assumes -> add the share). The message is the float64 vector that is
        encrypted; the server receives its ciphertexts only (privacy/he/aggregate.py)."""
        weight = float(rnd.server.weights[0])
        if self.client_dp is None:
            return Message(UPDATE, sender, rnd.index, weight * prepared.detach().double().cpu())
        share = client_message(prepared, bound)
        sides = [float(share.clipped_norm), float(share.within_bound)] if shares is None else \
            [float(share.clipped_norm) * shares.side_scale, 0.0]
        vector = torch.cat([weight * share.update.detach().double().cpu(), torch.tensor(sides, dtype=torch.float64)])
        if shares is not None:
            norm = float(torch.linalg.vector_norm(vector))
            if norm > shares.input_norm:  # a float32 clip can end a little above C
                vector = vector * (shares.input_norm / norm)
            vector = vector + gaussian_share(vector.numel(), shares.std, rnd.noise_gen, secure=self.secure_rng)
        return Message(UPDATE, sender, rnd.index, vector)


def _one_row(row: torch.Tensor) -> None:
    if row.dim() != 1:
        raise ValueError(f"the client half takes one sub-client's update (a vector), not a tensor of shape "
                         f"{tuple(row.shape)}")


class ServerHalf:
    """What the server does with the messages it receives."""

    def __init__(self, server: FedAvgServer, client_dp: ClientLevelDP | None,
                 secure: SecureAggregation | None = None):
        self.server, self.client_dp, self.secure = server, client_dp, secure

    def clip_bound(self, norms: list[Message]) -> float:
        """This round's C: fixed, from earlier releases (quantile), or the median of the
        norm messages (the paper's; not covered)."""
        return self.client_dp.clip_bound(_stack(norms))

    @staticmethod
    def combine(messages: list[Message], weights: torch.Tensor, numel: int, device: torch.device) -> torch.Tensor:
        """The server's only view of the updates: their weighted sum."""
        return weighted_sum([m.payload for m in messages], weights, numel, device)

    def combine_secure(self, messages: list[Message], code: RingCode, round_idx: int, numel: int,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """SecAgg+ over the ring inputs: the decoded sum of the weighted updates, the sum of
        the side values, and the protocol's costs. No inputs: an empty sum."""
        if not messages:
            return torch.zeros(numel, device=device), torch.zeros(SIDES), {}
        try:
            secure = self.secure.combine([m.payload.numpy().view(np.uint64) for m in messages], code, round_idx)
        except SecAggAbort as err:
            raise AggregationAborted(
                f"round {round_idx}: {err}; the model keeps the rounds before it. Lower --secagg_threshold or "
                "--dropout_rate, or send more inputs a round (-VN, -sr)") from None
        stats = {f"secagg_{name}": value for name, value in self.secure.rounds[-1].items()}
        return secure.total.to(torch.float32).to(device), secure.sides, stats

    @staticmethod
    def combine_encrypted(encrypted: EncryptedAggregation, messages: list[Message], numel: int,
                          device: torch.device, round_idx: int,
                          server_noise: np.ndarray | None = None) -> tuple[torch.Tensor, dict]:
        """--secure_agg ckks|cyclic: each input (the weighted update with, under client-level
        DP, its side values appended) is encrypted, the server adds the ciphertexts (and its
        encrypted `server_noise`, laid out as an input) and the hospitals decrypt the sum.
        Returns the weighted sum and the summed side values."""
        if not messages:  # nothing to hide: the release is the noise alone
            total = torch.zeros(numel + SIDES, dtype=torch.float64) if server_noise is None else \
                torch.from_numpy(server_noise)
            return total[:numel].to(torch.float32).to(device), {"clipped_norm": total[numel:numel + 1].float(),
                                                                "within_bound": total[numel + 1:].float()}
        try:
            total = encrypted.combine([m.payload.numpy() for m in messages], round_idx, server_noise).total
        except CyclicAbort as err:
            raise AggregationAborted(f"round {round_idx}: {err}") from None
        sides = {"clipped_norm": total[numel:numel + 1].float(), "within_bound": total[numel + 1:].float()}
        return total[:numel].to(torch.float32).to(device), sides

    def encrypted_noise(self, numel: int, bound: float, plan: RoundPlan) -> np.ndarray:
        """The central noise the server adds to the encrypted sum, laid out as an input:
        the update's draw, the norm sum's, and 0 for the within-bound count (no --adaclip)."""
        update, norm_sum = self.client_dp.draw_noise(numel, bound, plan)
        return np.concatenate([update.double().cpu().numpy(), [norm_sum, 0.0]])

    def finalize(self, total: torch.Tensor, sides: dict[str, torch.Tensor], norms: torch.Tensor, bound: float | None,
                 plan: RoundPlan | None, *, noise_in_sum: bool = False) -> tuple[torch.Tensor, dict]:
        """The released update and the round's statistics. `sides`: the messages' side
        values ("clipped_norm", "within_bound"), one per message or already summed; `norms`:
        the norm messages (outside --strict_dp); `noise_in_sum`: the server's noise is
        already in the decrypted sum and its norm side."""
        if self.client_dp is None:
            return total, {"norm_sum": float(norms.sum()), "aggregate_norm": float(torch.linalg.vector_norm(total))}
        result = self.client_dp.server_release(
            total, bound=bound, plan=plan, clipped_norms=sides["clipped_norm"], within_bound=sides["within_bound"],
            norms=None if self.client_dp.strict else norms, noise_in_sum=noise_in_sum)
        return result.update, result.stats


def _stack(values: list) -> torch.Tensor:
    values = [v.payload if isinstance(v, Message) else v for v in values]
    return torch.stack(values) if values else torch.zeros(0)


class ReleasePipeline:
    def __init__(self, cfg: Config, server: FedAvgServer, client_dp: ClientLevelDP | None,
                 local_dp: LocalUpdateDP | None, secure: SecureAggregation | None = None,
                 noise: DistributedNoise | None = None, numel: int = 0, encrypted: EncryptedAggregation | None = None):
        self.cfg, self.server, self.client_dp, self.local_dp, self.secure = cfg, server, client_dp, local_dp, secure
        self.encrypted = encrypted  # --secure_agg ckks|cyclic
        self.noise = noise  # --noise_at clients: the shares' sizes
        self.secure_release = SecureRelease(cfg, client_dp, secure, noise, numel) if secure else None
        self.shares_release = SharesRelease(cfg, client_dp, GaussianShares(noise)) \
            if encrypted is not None and noise is not None else None
        self.client = ClientHalf(server, client_dp, local_dp, secure, encrypted=encrypted is not None,
                                 secure_rng=cfg.secure_rng)
        self.server_half = ServerHalf(server, client_dp, secure)
        self.hooks: list[MessageHook] = []  # each sees every message sent (read-only)

    def declare(self, counts: list[int]) -> DeclaredRound | None:
        """The round's client-level releases, declared once for the budget check and the
        charge (`counts`: each hospital's sub-clients this round); None without client-level
        DP. With the noise at the clients, the worst case the protocol lets through."""
        if self.client_dp is None:
            return None
        if self.shares_release is not None:
            return self.shares_release.declare(counts)
        return self.client_dp.declare(counts) if self.noise is None else self.secure_release.worst_case(counts)

    def within_budget(self, declared: DeclaredRound | None) -> bool:
        return declared is None or self.client_dp.within_budget(declared)

    def charge(self, declared: DeclaredRound | None) -> None:
        """Charge the round's declared releases (every round, sampled-out ones included).
        With the noise at the clients the round charges itself, after the protocol."""
        if declared is not None and self.noise is None:
            self.client_dp.charge(declared)

    def observed(self, message: Message) -> Message:
        """`message`, after every hook has seen it (what leaves a client)."""
        for hook in self.hooks:
            hook(message)
        return message

    def round(self, params: torch.Tensor, deltas: torch.Tensor, part: Participants, round_idx: int,
              noise_gen: torch.Generator, *, step: bool = True) -> tuple[torch.Tensor, dict]:
        """Messages -> released aggregate -> server step, in one process: the round's three
        phases (`open_round`, `announce`, `close_round`) with every sub-client's half run
        here. A deployment (deploy/) runs the same phases with the client half at the
        hospitals. With `step` False (the probe round) the server optimizer still takes the
        aggregate into its state (FedAdam's moments, DP2-RMSProp's accumulator) but the
        parameters are kept, as the paper's code restores only the model. Returns the new
        parameters and the round's statistics."""
        rnd, max_weight = self.open_round(part, round_idx)
        prepared = [self.client.prepare(row, self.client_round(rnd, k, part)) for k, row in enumerate(deltas)]
        norms = [self.observed(self.client.norm_message(p, part.members[k], self.client_round(rnd, k, part)))
                 for k, p in enumerate(prepared)] if self.sends_norms else []
        announced = self.announce(rnd, part, max_weight, norms, noise_gen)
        messages = [self.observed(self.client.send(p, part.members[k], self.client_round(rnd, k, part),
                                                   announced.bound, announced.ring, announced.shares))
                    for k, p in enumerate(prepared)]
        return self.close_round(params, rnd, part, announced, messages, prepared, step=step)

    @property
    def sends_norms(self) -> bool:
        """Whether each sub-client sends its norm before its update (outside --strict_dp,
        secure aggregation and encryption: the paper's median clip and statistics)."""
        strict = self.client_dp is not None and self.client_dp.strict
        return not (strict or self.secure or self.encrypted)

    def open_round(self, part: Participants, round_idx: int) -> tuple[ServerRound, float | None]:
        """The round's weights and local steps (and, under client-level DP, the largest
        weight, which sets the noise std); charges local update DP to the senders."""
        max_weight = None
        if self.client_dp is not None:
            weights, max_weight = private_weights(self.cfg, part)
        else:
            weights = round_weights(part.num_samples, weighted=self.cfg.weighted_avg)
        steps = torch.tensor(part.local_steps, dtype=torch.float32)
        senders = part.members[:len(part.members) - part.canaries]
        if self.local_dp is not None and senders:
            self.local_dp.charge_round([h for h, _ in senders])
        return ServerRound(round_idx, weights, steps), max_weight

    def announce(self, rnd: ServerRound, part: Participants, max_weight: float | None, norms: list[Message],
                 noise_gen: torch.Generator) -> "Announcement":
        """What the server tells the sub-clients before they send: the clip bound (from the
        norm messages or earlier releases), the release plan, and the ring's or the
        shares' parameters under secure aggregation."""
        bound = self.server_half.clip_bound(norms) if self.client_dp is not None else \
            self.cfg.S if self.secure else None  # the ring needs a bound on every update
        plan = RoundPlan(max_weight, noise_gen, self.cfg.sample_rate * part.planned_subclients) \
            if self.client_dp is not None else None
        ring = self.secure_release.ring_round(rnd.index, rnd.weights, bound, max_weight,
                                              plan and plan.expected_participants,
                                              part.planned_subclients) if self.secure else None
        shares = self.shares_release.share_round(bound, max_weight, plan.expected_participants) \
            if self.shares_release is not None else None
        return Announcement(bound, plan, norms, ring, shares)

    def close_round(self, params: torch.Tensor, rnd: ServerRound, part: Participants, announced: "Announcement",
                    messages: list[Message], prepared: list[torch.Tensor] | None = None, *,
                    step: bool = True) -> tuple[torch.Tensor, dict]:
        """combine the update messages -> finalize (noise, fixed denominators) -> server
        step. `prepared`: the rows before clipping, for SecAgg+'s quantisation diagnostic
        (in-process only)."""
        bound, plan, norms, ring, shares = announced
        round_idx = rnd.index
        if self.secure:
            total, summed, secagg_stats = self.server_half.combine_secure(messages, ring.code, round_idx,
                                                                          params.numel(), params.device)
            if self.noise is None and prepared is not None:  # with the noise in the sum, its distance is the noise
                secagg_stats.update(self.secure_release.quantisation_error(total, prepared, rnd.weights, bound,
                                                                           messages))
            sides = {"clipped_norm": summed[:1].float(), "within_bound": summed[1:].float()}
            norms_seen = sides["clipped_norm"]
        elif self.encrypted is not None:
            # central noise: the server adds it to the encrypted sum, so no hospital decrypts a sum without it
            server_noise = self.server_half.encrypted_noise(params.numel(), bound, plan) \
                if self.client_dp is not None and shares is None else None
            total, sides = self.server_half.combine_encrypted(self.encrypted, messages, params.numel(),
                                                              params.device, round_idx, server_noise)
            sides = sides if self.client_dp is not None else {}
            norms_seen, secagg_stats = _stack(norms), {}
        else:
            total = self.server_half.combine(messages, rnd.weights, params.numel(), params.device)
            sides = {name: _stack([m.shares[name] for m in messages]) for name in ("clipped_norm", "within_bound")} \
                if self.client_dp is not None else {}
            norms_seen, secagg_stats = _stack(norms), {}
        return self.release(params, rnd, part, announced, total, sides, norms_seen, secagg_stats, len(messages),
                            step=step)

    def release(self, params: torch.Tensor, rnd: ServerRound, part: Participants, announced: "Announcement",
                total: torch.Tensor, sides: dict, norms_seen: torch.Tensor, extra_stats: dict, received: int, *,
                step: bool = True) -> tuple[torch.Tensor, dict]:
        """finalize the combined sum (its noise and fixed denominators) -> server step. A
        deployment whose own protocol did the combining (Flower's SecAgg+) enters here."""
        bound, plan, _, ring, shares = announced
        if self.shares_release is not None:
            update, stats = self.shares_release.release(total, sides, shares, bound, plan, received,
                                                        [len(sizes) for sizes in part.all_sizes])
        elif self.noise is not None:
            update, stats = self.secure_release.distributed_release(total, sides, ring, bound, plan, part)
        else:
            update, stats = self.server_half.finalize(total, sides, norms_seen, bound, plan,
                                                      noise_in_sum=self.encrypted is not None)
        stats.update(extra_stats)
        stepped = self.server.step(params, update, rnd)
        if step:
            params = stepped
        return params, self.server.rule_stats(stats, rnd)

    @staticmethod
    def client_round(rnd: ServerRound, k: int, part: Participants) -> ClientRound:
        """Row k's one-row view of the round: its weight, its local steps, its generator."""
        gen = part.generators[k] if part.generators else None
        return ClientRound(rnd.index, ServerRound(rnd.index, rnd.weights[k:k + 1], rnd.local_steps[k:k + 1]), gen)
