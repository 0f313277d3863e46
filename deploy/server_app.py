"""The Flower ServerApp: fed_train.py's server (deploy/coordinator.py) over Flower's Grid.

Run config keys: `flags` (fed_train.py's flags, one string), `engine` ("simulation" or
"deployment", for the summary), and Flower's own options (deploy/settings.py). The server
passes the flags on to the hospitals in its messages, so every party runs the same ones.
"""
from __future__ import annotations

import sys

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from deploy.coordinator import Coordinator
from deploy.settings import FlowerOptions, check_deployable, parse_flags
from federated.config import ConfigError
from federated.errors import RunError

FAILED = "flower server: stopped: "


def serve(grid: Grid, run_config: dict) -> dict:
    """Run the federation the run config describes; returns the run's summary. A refusal
    or a stopped run is printed as one line and raised."""
    try:
        flags = str(run_config.get("flags", ""))
        cfg = parse_flags(flags)
        options = FlowerOptions.from_run_config(run_config)
        check_deployable(cfg, options)
        torch.set_num_threads(max(cfg.threads, 1))
        summary = Coordinator(grid, cfg, options, flags=flags, engine=str(run_config.get("engine", "deployment"))).run()
    except Exception as err:  # noqa: BLE001 -- every stop is said in one line, then raised
        print(f"{FAILED}{err}" if isinstance(err, (ConfigError, RunError)) else f"{FAILED}{type(err).__name__}: {err}",
              file=sys.stderr, flush=True)
        raise
    print(f"flower server: finished {summary['rounds_run']} rounds; test {summary['primary_metric']} "
          f"{summary['test'][summary['primary_metric']]:.4f}; results in {summary['run_dir']}", flush=True)
    return summary


def server_app(run_config: dict | None = None) -> ServerApp:
    """A ServerApp; `run_config` (the simulation's) is laid over the one Flower passes."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        serve(grid, {**dict(context.run_config), **(run_config or {})})

    return app


app = server_app()
