"""The run configuration of a deployment: fed_train.py's flags, plus Flower's own options.

A Flower run is given the same flags as fed_train.py, as one string (run config key
`flags`), and they are parsed by the same parser. What the deployment does not run yet is
refused here, before any process starts, with the flag to drop.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass

from federated.config import Config, ConfigError, parse_config

# fed_train.py features that a deployment does not run, and why.
NOT_DEPLOYED = (
    ("resume", "a deployment keeps no checkpoint between runs; start it again"),
    ("merge", "a hospital scores only its own split; the pooled score needs everyone's images in one place"),
    ("personalize_steps", "personalised scores are not computed at the hospitals yet"),
    ("audit_canaries", "the audit's canaries are inserted by the simulation"),
    ("test", "evaluate a saved checkpoint with fed_train.py --test"),
)
NOT_DEPLOYED_CHOICES = (
    ("dp_level", "none", "sample- and update-level local DP are charged per hospital by the simulation only"),
    ("secure_agg", "none", "the repository's own secure aggregation runs in the simulation; on Flower use "
                           "--flower_secagg (Flower's SecAgg+)"),
)


@dataclass(frozen=True)
class FlowerOptions:
    """Run config keys of the deployment itself (everything else comes from `flags`)."""
    secagg: bool = False           # aggregate each round's updates with Flower's SecAgg+
    num_shares: int = 0            # SecAgg+: share holders per hospital (0: every hospital)
    threshold: int = 0             # SecAgg+: shares needed to unmask (0: a majority of num_shares, plus one)
    reply_timeout: float = 600.0   # seconds the server waits for a hospital's reply before it stops the run
    node_wait: float = 120.0       # seconds the server waits for every hospital's node to connect
    drop: tuple[int, ...] = ()     # SecAgg+ experiments: hospitals (partition ids) that drop out of every round

    @staticmethod
    def from_run_config(run_config: dict) -> "FlowerOptions":
        return FlowerOptions(bool(run_config.get("flower-secagg", False)), int(run_config.get("num-shares", 0)),
                             int(run_config.get("reconstruction-threshold", 0)),
                            float(run_config.get("reply-timeout", 600.0)), float(run_config.get("node-wait", 120.0)),
                            parse_drop(str(run_config.get("drop-hospitals", ""))))


def parse_drop(text: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise ConfigError(f"--drop_hospitals {text!r}: give partition ids separated by commas, e.g. 1,3") from None


def parse_flags(flags: str) -> Config:
    """fed_train.py's flags (one string) -> Config, with usage errors as ConfigError."""
    try:
        cfg = parse_config(shlex.split(flags))
    except SystemExit as stop:  # argparse's usage error has been printed to stderr
        raise ConfigError(f"the run config's flags ({flags!r}) are not valid fed_train.py flags; "
                          f"see the message above (exit {stop.code})") from None
    check_deployable(cfg)
    return cfg


def check_deployable(cfg: Config, options: FlowerOptions | None = None) -> None:
    """Refuse, with the fix, what a deployment does not run."""
    for flag, why in NOT_DEPLOYED:
        if getattr(cfg, flag):
            raise ConfigError(f"--{flag} is not served on Flower: {why}; drop it, or run fed_train.py")
    for flag, default, why in NOT_DEPLOYED_CHOICES:
        if getattr(cfg, flag) != default:
            raise ConfigError(f"--{flag} {getattr(cfg, flag)} is not served on Flower: {why}; drop it, or run "
                              "fed_train.py")
    if options is not None and options.drop and not options.secagg:
        raise ConfigError("--drop_hospitals makes hospitals drop out of Flower's SecAgg+; add --flower_secagg")
    if options is not None and options.secagg:
        check_secagg(cfg, options)


def check_run_folder(cfg: Config) -> None:
    """A deployment keeps no checkpoint, so fed_train.py's rule (a folder without one is a
    run that never finished, and is replaced) would replace a finished run: refuse instead."""
    from federated.runfolder import run_dir
    from utils import runfiles
    folder = run_dir(cfg)
    if (folder / runfiles.SUMMARY).exists() and not cfg.overwrite:
        raise ConfigError(f"run folder {folder} already holds a finished run; pass --overwrite to replace it, or "
                          "--exp NAME for a new one")


def check_secagg(cfg: Config, options: FlowerOptions) -> None:
    """Flower's SecAgg+ sums what the hospitals send: it needs client-level DP's clip (the
    bound on each update) and its fixed, equal weights, every hospital in every round, and
    no norm travelling in the clear beside it."""
    if not cfg.private:
        raise ConfigError("--flower_secagg needs client-level DP (a private --mode, e.g. dpsgd): its clip is "
                          "what bounds each hospital's input to the protocol")
    if not cfg.strict_dp:
        raise ConfigError("--flower_secagg needs --strict_dp: outside it each sub-client sends its norm in the "
                          "clear for the paper's median clip, which the protocol is there to hide")
    if cfg.weighted_avg:
        raise ConfigError("--flower_secagg sums equally weighted updates; drop --weighted_avg")
    if cfg.clients < 3:
        raise ConfigError(f"--flower_secagg with -N {cfg.clients}: with 2 hospitals each learns the other's update "
                          "from the sum (its own subtracted); use -N 3 or more")
    if cfg.sample_rate < 1:
        raise ConfigError("--flower_secagg runs every hospital every round: a sampled round can hold fewer than "
                          "2 hospitals, whose sum the protocol cannot hide; use -sr 1")
    if options.num_shares and options.num_shares % 2 == 0:
        # Flower's SecAgg+ builds a ring of num_shares neighbours; an even count below the
        # number of hospitals crashes it (5 hospitals with 4 shares)
        raise ConfigError(f"num-shares={options.num_shares} is even; use an odd number (e.g. "
                          f"{options.num_shares + 1}), or 0 for every hospital")
    if options.num_shares and options.num_shares < 3:
        raise ConfigError(f"num-shares={options.num_shares} is too small; use 3 or more, or 0 for every hospital")
    if options.threshold and options.num_shares and options.threshold > options.num_shares:
        raise ConfigError(f"reconstruction-threshold={options.threshold} exceeds num-shares={options.num_shares}")


def option_parser():
    """The deployment's own flags; every other flag is fed_train.py's."""
    import argparse
    parser = argparse.ArgumentParser(add_help=False, usage=argparse.SUPPRESS)
    parser.add_argument("--flower_secagg", action="store_true",
                        help="aggregate each round with Flower's SecAgg+ (needs a private --mode and --strict_dp)")
    parser.add_argument("--num_shares", type=int, default=0,
                        help="SecAgg+: share holders per hospital, odd (default 0: every hospital)")
    parser.add_argument("--reconstruction_threshold", type=int, default=0,
                        help="SecAgg+: shares needed to unmask (default 0: half the hospitals, plus one)")
    parser.add_argument("--reply_timeout", type=float, default=600.0,
                        help="seconds to wait for a hospital's reply before the run stops (default 600)")
    parser.add_argument("--drop_hospitals", default="",
                        help="SecAgg+ experiments: partition ids of hospitals that drop out after sharing their keys, "
                             "every round (e.g. 2); their masks are removed from the others' shares")
    parser.add_argument("--node_wait", type=float, default=120.0,
                        help="seconds to wait for every hospital's node to connect (default 120)")
    return parser


def run_config_of(argv: list[str], *, engine: str) -> dict:
    """Command-line flags -> the run config (fed_train.py's flags as one string, plus the
    deployment's own keys), checked before anything starts."""
    known, rest = option_parser().parse_known_args(argv)
    options = FlowerOptions(known.flower_secagg, known.num_shares, known.reconstruction_threshold,
                            known.reply_timeout, known.node_wait, parse_drop(known.drop_hospitals))
    cfg = parse_flags(shlex.join(rest))
    check_deployable(cfg, options)
    check_run_folder(cfg)
    return {"flags": shlex.join(rest), "engine": engine, "flower-secagg": options.secagg,
            "num-shares": options.num_shares, "reconstruction-threshold": options.threshold,
            "reply-timeout": options.reply_timeout, "node-wait": options.node_wait,
            "drop-hospitals": ",".join(map(str, options.drop))}

