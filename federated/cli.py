"""The command line of fed_train.py: flags -> Config -> run -> summary lines.

Kept in the package so that tools (tools/sweep.py) can call it without importing the
entry script."""
from __future__ import annotations

import math
import sys

from federated.config import ConfigError, given_flags, parse_config


def format_metrics(metrics: dict) -> str:
    return " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _eps(by_accountant: dict) -> str:
    return ", ".join(f"{v:.3f} ({k})" if math.isfinite(v) else f"not finite ({k}; see the report's notes)"
                     for k, v in by_accountant.items())


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)  # bad flags exit here, before torch loads
    from datasets.imageio import DataError
    from federated.errors import RunError
    from federated.run import run_test, run_training
    try:
        if cfg.test:
            report = run_test(cfg, given_flags(argv))
            print(f"test ({report['checkpoint']}): {format_metrics(report['test'])}")
            return 0
        summary = run_training(cfg)
    except (ConfigError, DataError) as err:
        print(f"fed_train.py: error: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"fed_train.py: stopped: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:  # before the run folder existed
        print("fed_train.py: interrupted before training started; nothing was written", file=sys.stderr)
        return 130
    primary = summary["primary_metric"]
    timing = summary["timing"]
    print(f"test {primary} {summary['test'][primary]:.4f} (mean over hospitals, round {summary['best_round']}: "
          f"{summary['model_selection']}) | {format_metrics(summary['test'])}")
    if "test_personal" in summary:
        print(f"personalised test {primary} {summary['test_personal'][primary]:.4f} (each hospital's model adapted on "
              f"its own training split, --personalize_steps) | {format_metrics(summary['test_personal'])}")
    if "sample_privacy" in summary:
        p = summary["sample_privacy"]
        print(f"sample-level DP-SGD: largest epsilon over hospitals (per patient) {_eps(p['epsilon_max'])} "
              f"(delta = {p['delta']:g}, z = {p['noise_multiplier']:.4g})")
    if "local_privacy" in summary:
        p = summary["local_privacy"]
        print(f"local update DP: largest epsilon per sub-client (= per patient) {_eps(p['epsilon_max'])}; "
              f"per hospital {_eps(p['epsilon_hospital_max'])} (delta = {p['delta']:g}, z = {p['noise_multiplier']:.4g})")
    if "fairness" in summary:
        f = summary["fairness"]
        m = f["metrics"]

        def ci(name: str, sign: str = "") -> str:
            return f"{m[name]['value']:{sign}.4f} [{m[name]['low']:{sign}.3f}, {m[name]['high']:{sign}.3f}]"
        print(f"fairness (test pooled, Youden thresholds from validation, 95% bootstrap CI over {f['resamples']} "
              f"resamples): " + " | ".join(f"{k} {ci(k)}" for k in ("auc", "acc", "sen", "spe")))
        print("  parity differences: " + ", ".join(f"{k[8:]} {ci(k, '+')}" for k in m if k.startswith("spd_acc_")))
        if f["threshold_fallback"]:
            print(f"  threshold 0.5 for {', '.join(f['threshold_fallback'])}: validation holds a single class")
    print(f"{summary['rounds_run']} rounds in {summary['wall_s']:.1f} s; outside local training "
          f"{100 * timing['outside_local_fraction']:.1f}% of round time "
          f"(evaluation {100 * timing['eval_s'] / timing['total_s']:.1f}%, checkpoints "
          f"{100 * timing['checkpoint_s'] / timing['total_s']:.1f}%, aggregation and bookkeeping "
          f"{100 * timing['overhead_fraction']:.1f}%); results in {summary['run_dir']}")
    if "privacy" in summary:  # last line: the epsilon spent, per unit
        p = summary["privacy"]
        eps = p["epsilon"]
        counts = summary["subclients_per_hospital"]
        v = f"{counts[0]}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)} (unequal: {counts})"
        print(f"privacy: z = {p['noise_multiplier']:.4g}, delta = {p['delta']:g}, q = {p['sample_rate']:g} "
              f"({p['sampling']}), {p['rounds_charged']} rounds charged; final sub-clients per hospital {v}; "
              f"epsilon per hospital {_eps(eps['hospital'])}; per sub-client {_eps(eps['subclient'])}; "
              f"per patient {_eps(eps['patient'])}")
    return 0

