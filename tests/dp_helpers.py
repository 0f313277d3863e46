"""Building a client-level release outside a run, as the tests of the mechanism need it."""
from privacy.client_dp import ClientLevelDP, ReleasePlan
from privacy.ledger import PrivacyLedger


def make_client_dp(*, clip_policy, sampling, noise_multiplier=1.0, noise_scale_when_unclipped=1.0, ledger=None,
                   delta=1e-3, secure=False, strict=False, norm_sum_noise=1.0, split="hash", balanced=False,
                   **kw) -> ClientLevelDP:
    """A ClientLevelDP with the plan `federated/privacy_setup.py` would build for these settings."""
    plan = ReleasePlan.for_policy(sampling, clip_policy, strict=strict, norm_sum_noise=norm_sum_noise, split=split,
                                  balanced=balanced)
    return ClientLevelDP(noise_multiplier=noise_multiplier, plan=plan, clip_policy=clip_policy,
                         noise_scale_when_unclipped=noise_scale_when_unclipped,
                         ledger=PrivacyLedger() if ledger is None else ledger, delta=delta, secure=secure, **kw)


def charge_round(dp: ClientLevelDP, counts: list[int]) -> None:
    """One round declared and charged, as the loop does."""
    dp.charge(dp.declare(counts))


def within_budget(dp: ClientLevelDP, counts: list[int]) -> bool:
    return dp.within_budget(dp.declare(counts))
