"""Build the privacy parts from a Config (client-level aggregator, DP-SGD settings and
ledger, local update DP), and say what they cover."""
from __future__ import annotations

import torch.nn as nn
from opacus.validators import ModuleValidator

from datasets.base import SEGMENTATION, FederatedData
from federated.config import Config, ConfigError
from federated.subclients import allocate_subclients
from privacy.accountants import Sampling, calibrate_noise, sampling_note
from privacy.client_dp import ClientLevelDP
from privacy.clipping import FixedClip, MedianClip, NoClip, QuantileClip
from privacy.ledger import PrivacyLedger
from privacy.local_update_dp import LocalUpdateDP, local_noise_multiplier
from privacy.sample_dp import SampleDPSettings, SampleLevelLedger, sample_noise_multiplier


def sampling_of(cfg: Config) -> Sampling:
    n, q = cfg.clients, cfg.sample_rate
    if q >= 1:
        return Sampling("all", 1.0, n, n)
    if cfg.client_sampling == "fixed":
        m = max(1, int(n * q))
        return Sampling("fixed", m / n, n, m)
    return Sampling("poisson", q, n, max(1, round(n * q)))


def charged_rounds(cfg: Config) -> int:
    """Rounds that run the mechanism: every one of --rounds, the discarded probe round of
    --ada_vn / --init_vn (round 0) included."""
    return cfg.rounds


def strict_extras(cfg: Config) -> tuple[float, ...]:
    if not cfg.strict_dp:
        return ()
    return (cfg.norm_sum_noise,) + ((cfg.clip_count_noise,) if cfg.adaclip else ())


def noise_multiplier(cfg: Config, sampling: Sampling) -> float:
    """--noise_multiplier, or the z that --epsilon calibrates for the planned rounds."""
    if cfg.noise_multiplier is not None:
        return cfg.noise_multiplier
    scale = cfg.virtual_clients if cfg.target_unit == "hospital" else 1
    try:
        return calibrate_noise(cfg.epsilon, rounds=charged_rounds(cfg), delta=cfg.delta, accountant=cfg.accountant,
                               sampling=sampling, scale=scale, extra=strict_extras(cfg))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def build_client_dp(cfg: Config) -> ClientLevelDP:
    sampling = sampling_of(cfg)
    if cfg.noclip:
        clip_policy = NoClip()
    elif cfg.adaclip and cfg.strict_dp:
        clip_policy = QuantileClip(cfg.S, quantile=cfg.clip_quantile, lr=cfg.clip_lr, count_noise=cfg.clip_count_noise)
    elif cfg.adaclip:
        clip_policy = MedianClip()
    else:
        clip_policy = FixedClip(cfg.S)
    budget = cfg.epsilon if cfg.dp_mode == "bounded" else None
    return ClientLevelDP(noise_multiplier=noise_multiplier(cfg, sampling), clip_policy=clip_policy,
                         noise_scale_when_unclipped=cfg.S, ledger=PrivacyLedger(delta=cfg.delta, sampling=sampling),
                         secure=cfg.secure_rng, strict=cfg.strict_dp, norm_sum_noise=cfg.norm_sum_noise,
                         budget=budget, budget_unit=cfg.target_unit, accountant=cfg.accountant)


def privacy_report(cfg: Config, z: float) -> dict:
    """What the run protects and what it leaves uncovered (printed at start, kept in the summary)."""
    covered = [f"each sub-client's whole update (every floating tensor sent, normalisation buffers included) "
               f"is clipped and Gaussian noise with multiplier z = {z:.4g} is added to the sum"]
    not_covered = []
    if cfg.noclip:
        not_covered.append("--noclip: updates are not clipped, so no finite epsilon holds")
    if cfg.adaclip and not cfg.strict_dp:
        not_covered.append("--adaclip: the clip bound is the median of the round's unprotected update norms "
                           "(it scales the noise the server adds; not privatised)")
    if cfg.adaclip and cfg.strict_dp:
        covered.append(f"clip bound: private quantile estimate (Andrew et al. 2021) from a noised count, "
                       f"sigma_b = {cfg.clip_count_noise}, charged to the ledger")
    if cfg.adaptive_subclients and not cfg.strict_dp:
        not_covered.append("--ada_vn/--init_vn: the intermediary count uses the sum of unprotected update norms")
    if cfg.adaptive_subclients and cfg.strict_dp:
        covered.append(f"intermediary statistic: sum of clipped norms with noise multiplier {cfg.norm_sum_noise}, "
                       "charged to the ledger")
    if cfg.strict_dp:
        covered.append("no training losses are reported and the final round's model is kept (no selection "
                       "on the hospitals' validation scores, which are computed as simulation diagnostics only)")
        not_covered.append("the final model's per-hospital test scores are reported without noise (the "
                           "evaluation of the released model, not part of training)")
    else:
        not_covered.append("per-hospital training losses, validation scores (which pick the best round) and "
                           "test scores are reported without noise")
    if cfg.mode == "dpnova":
        not_covered.append("--mode dpnova: each update is divided by its local step count and the server scales "
                           "the noisy mean by tau_eff = sum_k w_k tau_k; step counts follow from sub-client sizes "
                           "(not privatised)")
    if cfg.weighted_avg:
        not_covered.append("--weighted_avg: aggregation weights use sub-client sample counts (not privatised)")
    if not cfg.secure_rng:
        not_covered.append("noise comes from the run's seeded generator (reproducible); use --secure_rng in a deployment")
    note = sampling_note(sampling_of(cfg), cfg.accountant)
    return {"mode": "strict" if cfg.strict_dp else "faithful (paper's code)", "covered": covered,
            "not_covered": not_covered, "notes": [note] if note else []}


def build_sample_dp(cfg: Config, data: FederatedData, model: nn.Module,
                    model_name: str) -> tuple[SampleDPSettings | None, SampleLevelLedger | None]:
    """--dp_level sample: the DP-SGD settings for the local trainer and the per-hospital ledger."""
    if cfg.dp_level != "sample":
        return None, None
    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise ConfigError(f"--model {model_name} cannot be trained with DP-SGD ({problems[0]}); per-sample "
                          "gradients need layers that do not mix samples: use a GroupNorm model such as "
                          "dpresnet, resnet9, cnn or unet_small")
    if cfg.grad_sample_mode == "ghost" and data.task == SEGMENTATION:
        raise ConfigError("--grad_sample_mode ghost needs a per-sample loss, which the segmentation loss "
                          "(DiceCE) does not provide here; use --grad_sample_mode hooks")
    z = cfg.sample_noise if cfg.sample_noise is not None else _calibrated_sample_noise(cfg, data)
    settings = SampleDPSettings(z, cfg.max_grad_norm, cfg.physical_batch, cfg.grad_sample_mode)
    ledger = SampleLevelLedger(hospitals=[h.name for h in data.hospitals], noise_multiplier=z, delta=cfg.sample_delta)
    return settings, ledger


def _calibrated_sample_noise(cfg: Config, data: FederatedData) -> float:
    """DP-SGD z for --sample_epsilon over every planned step of the hospital with the
    smallest sub-clients (largest sampling rate: for a fixed number of epochs, the
    largest epsilon)."""
    sizes = [len(h.train) for h in data.hospitals]
    counts = allocate_subclients(sizes, cfg.virtual_clients, balance=cfg.balance_split)
    rate = min(1.0, cfg.batch / min(n // k for n, k in zip(sizes, counts)))
    steps = cfg.rounds * cfg.local_epochs * int(1 / rate)
    return sample_noise_multiplier(target_epsilon=cfg.sample_epsilon, delta=cfg.sample_delta, sample_rate=rate,
                                   steps=steps, accountant=cfg.accountant)


def build_local_update_dp(cfg: Config, data: FederatedData) -> LocalUpdateDP | None:
    """--dp_level update_local: z given, or calibrated over all --rounds for --local_epsilon."""
    if cfg.dp_level != "update_local":
        return None
    z = cfg.local_noise if cfg.local_noise is not None else local_noise_multiplier(
        target_epsilon=cfg.local_epsilon, rounds=cfg.rounds, delta=cfg.local_delta, accountant=cfg.accountant)
    return LocalUpdateDP(noise_multiplier=z, clip_bound=cfg.local_clip, delta=cfg.local_delta,
                         secure=cfg.secure_rng, hospitals=[h.name for h in data.hospitals])
