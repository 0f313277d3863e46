"""deploy/run_local.sh's helper: check the flags and pick the ports before any process starts.

    python -m deploy.local_setup FOLDER N [flags]
"""
from __future__ import annotations

import shlex
import socket
import sys
from pathlib import Path

import tomli_w

from deploy.settings import parse_flags, run_config_of
from federated.config import ConfigError
from federated.runfolder import run_dir


def write_local_run(argv: list[str]) -> None:
    """deploy/run_local.sh's helper: `FOLDER N [flags]` -> FOLDER/run.toml (the run config,
    checked), FOLDER/ports (free ports on 127.0.0.1: the SuperLink's, then one per SuperNode)
    and FOLDER/run_dir (where the server writes the run)."""
    folder, nodes, flags = argv[0], int(argv[1]), argv[2:]
    run_config = run_config_of(["-N", str(nodes), *flags], engine="deployment")
    cfg = parse_flags(run_config["flags"])
    if cfg.clients != nodes:
        raise ConfigError(f"-N {cfg.clients} among the flags, but {nodes} SuperNodes: give N once, as "
                          "run_local.sh's first argument")
    if not Path(cfg.save_path).is_absolute():  # the server runs in another process, from another folder
        run_config["flags"] += " --save_path " + shlex.quote(str(Path(cfg.save_path).resolve()))
        cfg = parse_flags(run_config["flags"])
    sockets = [socket.socket() for _ in range(1 + nodes)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    with open(f"{folder}/run.toml", "wb") as out:
        tomli_w.dump(run_config, out)
    with open(f"{folder}/ports", "w") as out:
        out.write(" ".join(map(str, ports)) + "\n")
    with open(f"{folder}/run_dir", "w") as out:
        out.write(str(run_dir(cfg).resolve()) + "\n")


if __name__ == "__main__":
    try:
        write_local_run(sys.argv[1:])
    except ConfigError as err:
        print(f"run_local.sh: error: {err}", file=sys.stderr)
        sys.exit(2)
