"""Run a federation on Flower's simulation engine: one ClientApp per hospital, one ServerApp.

    python -m deploy.simulate -N 3 --rounds 3 --threads 1            # fed_train.py's flags
    python -m deploy.simulate -N 3 --mode dpsgd --noise_multiplier 1 --strict_dp --flower_secagg

The run folder is fed_train.py's (--save_path, --exp). Flower's simulation engine runs the
ClientApps in Ray workers, one core each.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # CPU only: keep Ray from touching device variables

from deploy.settings import option_parser, parse_flags, run_config_of  # noqa: E402
from federated.config import ConfigError  # noqa: E402
from federated.runfolder import run_dir  # noqa: E402
from utils import runfiles  # noqa: E402
from utils.cores import free_cores  # noqa: E402

USAGE = ("usage: python -m deploy.simulate [deployment flags] [fed_train.py flags]\n\n"
         "Runs fed_train.py's federation on Flower's simulation engine, one ClientApp per hospital.\n"
         "fed_train.py's flags: python fed_train.py --help\n")


def simulate(argv: list[str], *, workers: int = 0) -> dict:
    """Run it; returns the summary the server wrote (raises ConfigError or RuntimeError)."""
    import json

    from flwr.simulation import run_simulation

    from deploy.client_app import app as client_app
    from deploy.server_app import server_app

    run_config = run_config_of(argv, engine="simulation")
    cfg = parse_flags(run_config["flags"])
    folder = run_dir(cfg)
    summary_path = folder / runfiles.SUMMARY
    before = summary_path.stat().st_mtime if summary_path.exists() else None
    workers = workers or max(1, min(cfg.clients, free_cores()))
    run_simulation(server_app=server_app(run_config), client_app=client_app, num_supernodes=cfg.clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": workers, "include_dashboard": False}})
    if not summary_path.exists() or summary_path.stat().st_mtime == before:
        raise RuntimeError("the Flower simulation ended without a summary: the server stopped (see its line above)")
    return json.loads(summary_path.read_text())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(USAGE + "\ndeployment flags:" + option_parser().format_help().split(":", 1)[1])
        return 0
    try:
        summary = simulate(argv)
    except ConfigError as err:
        print(f"deploy.simulate: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"deploy.simulate: stopped: {err}", file=sys.stderr)
        return 1
    primary = summary["primary_metric"]
    print(f"test {primary} {summary['test'][primary]:.4f} | {summary['rounds_run']} rounds in "
          f"{summary['wall_s']:.1f} s ({summary['timing']['mean_round_s']:.2f} s per round); results in "
          f"{Path(summary['run_dir'])}")
    if "privacy" in summary:
        eps = summary["privacy"]["epsilon"]
        print("privacy: epsilon per hospital " + ", ".join(f"{v:.3f} ({k})" for k, v in eps["hospital"].items()) +
              "; per sub-client " + ", ".join(f"{v:.3f} ({k})" for k, v in eps["subclient"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
