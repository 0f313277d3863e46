"""Wire the privacy parts from a Config: the client-level release, DP-SGD, local update DP,
the one ledger they all charge, and the declared list of everything the run writes."""
from __future__ import annotations

import torch.nn as nn

from datasets.base import SEGMENTATION, FederatedData
from federated.config import Config, ConfigError, parse_drops
from federated.subclients import allocate_subclients
from privacy.accountants import Sampling, calibrate
from privacy.client_dp import ClientLevelDP, ReleasePlan
from privacy.clipping import FixedClip, MedianClip, NoClip, QuantileClip
from privacy.events import RoundShape, relation
from privacy.ledger import PrivacyLedger
from privacy.local_update_dp import LocalUpdateDP, local_noise_multiplier
from privacy.report import Output
from privacy.sample_dp import SampleDPSettings, open_sample_accounts, sample_noise_multiplier
from privacy.he.aggregate import ENCRYPTED, EncryptedAggregation
from privacy.secagg.aggregate import SecAggSettings, SecureAggregation
from privacy.secagg.distributed import DistributedNoise


def sampling_of(cfg: Config) -> Sampling:
    n, q = cfg.clients, cfg.sample_rate
    if q >= 1:
        return Sampling("all", 1.0, n, n)
    if cfg.client_sampling == "fixed":
        m = max(1, int(n * q))
        return Sampling("fixed", m / n, n, m)
    return Sampling("poisson", q, n, max(1, round(n * q)))


def planned_shapes(cfg: Config, sizes: list[int], counts: list[int], cap: int) -> list[RoundShape]:
    """The shape of every planned round as --epsilon calibration assumes it: the real first
    split, then with --ada_vn / --init_vn the split at the largest v the rule can reach
    (`cap`): every unit's charge grows with v, so no choice of the rule can cost more."""
    first = RoundShape(tuple(counts), cfg.subclient_split, cfg.balance_split)
    if not cfg.adaptive_subclients:
        return [first] * cfg.rounds
    largest = RoundShape(tuple(allocate_subclients(sizes, cap, balance=cfg.balance_split)), cfg.subclient_split,
                         cfg.balance_split)
    return [first] + [largest] * (cfg.rounds - 1)


def client_noise_multiplier(cfg: Config, plan: ReleasePlan, shapes: list[RoundShape]) -> float:
    """--noise_multiplier, or the z that --epsilon calibrates for the planned rounds (the
    probe round of --ada_vn / --init_vn included), each declared by the run's own `plan`
    as the run will charge it."""
    if cfg.noise_multiplier is not None:
        return cfg.noise_multiplier
    unit = cfg.target_unit
    ledger = PrivacyLedger()
    ledger.open(unit, level="client", unit=unit, adjacency="planned", relation=relation(unit, plan.sampling),
                sampling=plan.sampling, delta=cfg.delta)

    def spent(z: float) -> float:
        return ledger.epsilon(unit, cfg.accountant, extra=[plan.declare(z, shape).events[unit] for shape in shapes])
    try:
        return calibrate(cfg.epsilon, spent, what=f"--epsilon (--target_unit {unit}, {cfg.rounds} rounds)")
    except ValueError as err:
        raise ConfigError(str(err)) from None


def build_client_dp(cfg: Config, ledger: PrivacyLedger, shapes: list[RoundShape]) -> ClientLevelDP:
    """The client-level release; `shapes`: the planned rounds, for --epsilon calibration."""
    if cfg.noclip:
        clip_policy = NoClip()
    elif cfg.adaclip and cfg.strict_dp:
        clip_policy = QuantileClip(cfg.S, quantile=cfg.clip_quantile, lr=cfg.clip_lr, count_noise=cfg.clip_count_noise)
    elif cfg.adaclip:
        clip_policy = MedianClip()
    else:
        clip_policy = FixedClip(cfg.S)
    plan = ReleasePlan.for_policy(sampling_of(cfg), clip_policy, strict=cfg.strict_dp, norm_sum_noise=cfg.norm_sum_noise,
                                  split=cfg.subclient_split, balanced=cfg.balance_split)
    budget = cfg.epsilon if cfg.dp_mode == "bounded" else None
    return ClientLevelDP(noise_multiplier=client_noise_multiplier(cfg, plan, shapes), plan=plan,
                         clip_policy=clip_policy, noise_scale_when_unclipped=cfg.S, ledger=ledger, delta=cfg.delta,
                         secure=cfg.secure_rng, budget=budget, budget_unit=cfg.target_unit, accountant=cfg.accountant)


def build_sample_dp(cfg: Config, data: FederatedData, model: nn.Module, model_name: str, ledger: PrivacyLedger,
                    subclient_sizes: list[list[int]]) -> SampleDPSettings | None:
    """--dp_level sample: the DP-SGD settings for the local trainer; opens its accounts."""
    if cfg.dp_level != "sample":
        return None
    from opacus.validators import ModuleValidator  # Opacus loads only for DP-SGD runs

    # BatchNorm mixes the samples of a batch whether or not it has affine parameters; Opacus's
    # validator only looks at layers with parameters, so an affine-free BatchNorm (the paper's)
    # would pass it and leave a sample's influence on the others' gradients unclipped.
    mixing = [type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    problems = [f"{mixing[0]} normalises with batch statistics"] if mixing else \
        ModuleValidator.validate(model, strict=False)
    if problems:
        raise ConfigError(f"--model {model_name} cannot be trained with DP-SGD ({problems[0]}); per-sample "
                          "gradients need layers that do not mix samples: use a GroupNorm model such as "
                          "dpresnet, resnet9, cnn or unet_small")
    if cfg.grad_sample_mode == "ghost" and data.task == SEGMENTATION:
        raise ConfigError("--grad_sample_mode ghost needs a per-sample loss, which the segmentation loss "
                          "(soft Dice) does not provide here; use --grad_sample_mode hooks")
    z = cfg.sample_noise
    if z is None:
        try:
            z = sample_noise_multiplier(target_epsilon=cfg.sample_epsilon, delta=cfg.sample_delta,
                                        subclient_sizes=subclient_sizes, batch=cfg.batch,
                                        steps_per_round=cfg.local_epochs, rounds=cfg.rounds, accountant=cfg.accountant)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    open_sample_accounts(ledger, [h.name for h in data.hospitals], delta=cfg.sample_delta)
    return SampleDPSettings(z, cfg.max_grad_norm, cfg.physical_batch, cfg.grad_sample_mode, secure=cfg.secure_rng)


def build_local_update_dp(cfg: Config, data: FederatedData, ledger: PrivacyLedger) -> LocalUpdateDP | None:
    """--dp_level update_local: z given, or calibrated over all --rounds for --local_epsilon."""
    if cfg.dp_level != "update_local":
        return None
    z = cfg.local_noise
    if z is None:
        try:
            z = local_noise_multiplier(target_epsilon=cfg.local_epsilon, rounds=cfg.rounds, delta=cfg.local_delta,
                                       accountant=cfg.accountant)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return LocalUpdateDP(noise_multiplier=z, clip_bound=cfg.local_clip, delta=cfg.local_delta, secure=cfg.secure_rng,
                         hospitals=[h.name for h in data.hospitals], ledger=ledger)


def build_secure_aggregation(cfg: Config) -> SecureAggregation | None:
    """--secure_agg secagg+: the encode and combine of SecAgg+ (privacy/secagg/)."""
    if cfg.secure_agg != "secagg+":
        return None
    settings = SecAggSettings(cfg.secagg_neighbours, cfg.secagg_threshold, cfg.secagg_bits, cfg.dropout_rate,
                              parse_drops(cfg.secagg_drops))
    return SecureAggregation(settings, seed=cfg.seed)


def build_encrypted_aggregation(cfg: Config) -> EncryptedAggregation | None:
    """--secure_agg ckks|cyclic: CKKS through TenSEAL, the hospitals holding the key (privacy/he/)."""
    return EncryptedAggregation(cfg.secure_agg) if cfg.secure_agg in ENCRYPTED else None


def build_distributed_noise(cfg: Config, client_dp: ClientLevelDP | None) -> DistributedNoise | None:
    """--noise_at clients: the shares' sizes, from the run's z and the norm sum's multiplier."""
    if cfg.noise_at != "clients":
        return None
    return DistributedNoise(client_dp.z, cfg.norm_sum_noise)


def threat_model(cfg: Config) -> str:
    """Whom the run's guarantees trust, in words, for the report."""
    if cfg.secure_agg == "none":
        who = "the server sees every sub-client's message"
    elif cfg.secure_agg == "ckks":
        who = ("the server sees CKKS ciphertexts and holds no secret key; the hospitals decrypt the sum (a hospital "
               "holding the key could decrypt a message it relayed, which it never sees here)")
    elif cfg.secure_agg == "cyclic":
        who = ("the server relays CKKS ciphertexts around a ring of the inputs; the next input could decrypt the "
               "running sum plus the initiator's float64 mask (statistical hiding), and two colluding neighbours of "
               "an input learn its update")
    else:
        who = ("the server sees masked ring vectors and the unmasked sum of the surviving inputs only (SecAgg+: "
               "honest-but-curious, fewer than --secagg_threshold colluding share holders)")
    if cfg.private and cfg.noise_at == "clients" and cfg.secure_agg in ENCRYPTED:
        return (f"{who}; nobody adds noise after: each sub-client adds a Gaussian share before it is encrypted, the "
                "shares of the expected inputs adding up to the central release's noise, so no party decrypts a sum "
                "without noise. The hospitals that decrypt know their own shares and the server sees which inputs "
                "take part, so each unit is protected as replaced (its participation is public) by the other "
                "inputs' shares")
    if cfg.private and cfg.noise_at == "clients":
        return (f"{who}; it adds no noise: each sub-client adds a Skellam share before masking (distributed DP). "
                "The server sees which inputs take part, so each unit is protected as replaced (its participation is "
                "public), by the shares of the other inputs that reached the sum")
    if cfg.private and cfg.secure_agg in ENCRYPTED:
        return (f"{who}; the server encrypts its Gaussian draw under the hospitals' public key and adds it to the "
                "encrypted sum, so the hospitals decrypt only the noised sum (central DP: the server is trusted to "
                "add the noise and not to share its draw with a hospital that decrypts)")
    if cfg.private:
        return f"{who}; it is trusted to add the client-level noise to the sum (central DP)"
    if cfg.dp_level == "update_local":
        return f"{who}; each sub-client adds its own noise (local update DP): the server is not trusted"
    return f"{who}; no client-level noise"


def declared_outputs(cfg: Config, *, cap: int | None = None) -> list[Output]:
    """Everything the run writes besides the declared releases, with what protects it, and
    what the run's guarantees assume of its randomness. The recorder refuses a metric that
    no entry here declares. `cap`: the largest v the adaptive rule may choose."""
    private, strict = cfg.private, cfg.strict_dp
    nc, pp, cov = "not covered", "post-processing", "covered"
    out = []
    if private:
        noise = "the server adds Gaussian noise to the sum"
        if cfg.noise_at == "clients":
            noise = ("each sub-client adds a Gaussian share before encrypting it (--noise_at clients); each unit is "
                     "charged with the other inputs' shares") if cfg.secure_agg in ENCRYPTED else \
                ("each sub-client adds a Skellam share in the ring (--noise_at clients); the shares that reach the "
                 "sum are charged")
        out.append(Output("model updates", cov, "each sub-client's whole update (every floating tensor, "
                          f"normalisation buffers included) is clipped and {noise}"))
        out.append(Output("epsilon per round", pp, "read from the ledger", (("privacy", "epsilon_*"),)))
        out.append(Output("aggregate norm", pp, "norm of the released (noised) aggregate",
                          (("privacy", "aggregate_norm"),)))
        clip_status, clip_what = {
            "fixed": (pp, "the fixed clip bound --S and the noise std it sets (public)"),
            "median": (nc, "--adaclip: the clip bound is the median of the round's unprotected update norms, and the "
                           "noise std and expected noise norm are proportional to it"),
            "quantile": (pp, "--adaclip --strict_dp: the clip bound follows a noised count of unclipped updates "
                             "(charged to the ledger)"),
            "none": (nc, "--noclip: updates are not clipped, so no finite epsilon holds"),
        }[_clip_kind(cfg)]
        out.append(Output("clip bound", clip_status, clip_what, (("privacy", "clip_bound"), ("privacy", "noise_std"),
                                                                ("privacy", "expected_noise_norm"))))
        if strict:
            out.append(Output("intermediary statistic", cov, f"sum of clipped update norms released with noise "
                              f"multiplier {cfg.norm_sum_noise}, charged with the update",
                              (("privacy", "norm_sum"),)))
            out.append(Output("intermediary count", pp, "v and the split factor, from released quantities only "
                              "(the expected noise norm, not the realised noise)",
                              (("privacy", "v"), ("privacy", "split_factor"))))
        else:
            out.append(Output("norm statistics", nc, "the sum of unprotected update norms, the clipped fraction and "
                              "the sum of clipped norms are logged every round",
                              (("privacy", "norm_sum"), ("privacy", "clipped_fraction"),
                               ("privacy", "clipped_norm_sum"))))
            out.append(Output("intermediary count", nc if cfg.adaptive_subclients else pp,
                              "--ada_vn/--init_vn: v follows the unprotected norm sum" if cfg.adaptive_subclients
                              else "v is fixed by -VN", (("privacy", "v"), ("privacy", "split_factor"))))
        if cfg.mode == "dpnova":
            out.append(Output("step normalisation", nc, "--mode dpnova: each update is divided by its local step "
                              "count and the server scales by tau_eff; step counts follow from sub-client sizes"))
        if cfg.weighted_avg:
            out.append(Output("aggregation weights", nc, "--weighted_avg: weights use sub-client sample counts"))
        if cfg.adaptive_subclients and not cfg.max_vn:
            out.append(Output("intermediary cap", nc, f"v is capped at the smallest hospital's training size // "
                              f"--batch{f' (= {cap})' if cap else ''}: one record more or less in that hospital can "
                              "move the cap, and with it every hospital's split" +
                              (" and the calibrated noise" if cfg.epsilon is not None else "") +
                              "; --max_vn sets a public cap"))
        if cfg.epsilon is not None and cfg.dp_mode == "overhead":
            planned = (f"; the rounds after the probe are planned at the largest v the rule can reach "
                       f"({cap if cap else '--max_vn'}), since no smaller v costs more" if cfg.adaptive_subclients
                       else "")
            out.append(Output("noise calibration", pp, f"z is the smallest that keeps --target_unit "
                              f"{cfg.target_unit} within --epsilon {cfg.epsilon:g} over the {cfg.rounds} planned "
                              f"rounds, each charged as it will be{planned}"))
    else:
        out.append(Output("model updates", nc, "no client-level DP: updates are averaged without noise"))
        out.append(Output("round statistics", nc, "v, update norms and the aggregate norm",
                          (("privacy", "v"), ("privacy", "norm_sum"), ("privacy", "aggregate_norm"),
                           ("privacy", "split_factor"))))
    if cfg.secure_agg in ENCRYPTED:
        out.append(Output("encrypted aggregation", pp, f"--secure_agg {cfg.secure_agg}: each sub-client's clipped, "
                          "weighted update and its side values are encrypted with CKKS (TenSEAL; N 8192, scale 2^40, "
                          "about 3e-8 absolute error); the server adds ciphertexts; the hospitals decrypt the sum",
                          (("privacy", "noise_survived"),)))
    if cfg.secure_agg == "secagg+":
        out.append(Output("secure aggregation", pp, "SecAgg+: each sub-client's clipped, weighted update and its side "
                          "values are quantised into Z_2^" + str(cfg.secagg_bits) + " and masked; the server unmasks "
                          "only the sum; its inputs, bytes and protocol time per round are public",
                          (("privacy", "secagg_inputs"), ("privacy", "secagg_included"),
                           ("privacy", "secagg_bytes_*"), ("privacy", "secagg_*_s"), ("privacy", "noise_survived"))))
    if cfg.secure_agg == "secagg+" and cfg.noise_at == "server":  # with the noise in the sum it would be the noise
        out.append(Output("quantisation error", nc, "a simulation diagnostic a deployment cannot compute: the decoded "
                          "sum's distance from the exact weighted sum, relative to its norm",
                          (("privacy", "secagg_quantisation_error"),)))
    if cfg.dp_level == "sample":
        out.append(Output("DP-SGD", cov, "local steps clip per-sample gradients and add noise (Opacus); "
                           "sample-level accounts per hospital", (("privacy", "epsilon_sample_max"),)))
    if cfg.dp_level == "update_local":
        out.append(Output("local update DP", cov, "each sub-client clips its update and adds noise before sending",
                          (("privacy", "epsilon_local_*"),)))
    out += _randomness(cfg)
    if not strict:
        out.append(Output("training losses", nc, "per-hospital training losses, every round", (("train", "loss"),)))
    out.append(Output("validation scores", nc, "per-hospital validation scores, every round" +
                      (" (diagnostics only: the final model is kept)" if strict else "; they pick the best round"),
                      (("val", "*"),)))
    out.append(Output("test scores", nc, "per-hospital test scores of the final model, and fairness metrics "
                      "(thresholds chosen on the pooled validation set, bootstrap intervals)",
                      (("test", "*"), ("test_fairness", "*"), ("test_fairness_low", "*"), ("test_fairness_high", "*"))))
    if cfg.personalize_steps:
        out.append(Output("personalised scores", nc, "each hospital's model adapted on its own training split "
                          "(--personalize_steps), scored on its validation split every round and on test once; the "
                          "adapted models stay at the hospitals", (("val_personal", "*"), ("test_personal", "*"))))
    out.append(Output("hospital sizes", nc, "records per hospital and sub-client counts (printed and in the summary)"))
    out.append(Output("divergence stop", nc, "the run stops when a sub-client's loss or update is not finite; "
                      "the stop and its message name the hospital and round"))
    out.append(Output("checkpoint last.pt", nc, "a simulation artefact of the server side: every sub-client's "
                      "optimizer moments, the RNG states and the sub-client assignment key; a deployment keeps "
                      "these at the hospitals"))
    if cfg.audit_canaries:
        out.append(Output("audit record audit.pt", pp, "--audit_canaries: the canaries' secret bits and the starting "
                          "parameters; nothing in it comes from a hospital (the canaries hold no data)"))
    return out


def _randomness(cfg: Config) -> list[Output]:
    """Where each DP mechanism's randomness comes from, and what its guarantee needs of it."""
    if not (cfg.private or cfg.dp_level != "none"):
        return []
    draws = []
    if cfg.private:
        draws.append("client-level noise, client sampling and the sub-client assignment key")
    if cfg.dp_level == "update_local":
        draws.append("local update DP's noise")
    if cfg.dp_level == "sample":
        draws.append("DP-SGD's Poisson batches, augmentation and noise")
    seeded = ("local training's batch order and augmentation come from --seed" +
              (" even under --secure_rng" if cfg.secure_rng else ""))
    out = [Output("local training randomness", "covered",
                  f"{seeded}; each sub-client's whole update is clipped (client-level or local update DP) whatever "
                  "that randomness is, so it need not be secret" +
                  ("; DP-SGD's own randomness is listed separately" if cfg.dp_level == "sample" else ""))]
    if cfg.secure_rng:
        out.append(Output("randomness", "covered", f"{', '.join(draws)} come from the OS (--secure_rng)"))
    else:
        out.append(Output("randomness", "not covered", f"{', '.join(draws)} come from --seed (reproducible, "
                          "predictable); --secure_rng draws them from the OS"))
    return out


def _clip_kind(cfg: Config) -> str:
    if cfg.noclip:
        return "none"
    if cfg.adaclip:
        return "quantile" if cfg.strict_dp else "median"
    return "fixed"
