"""One round's sum through Flower's SecAgg+ (--flower_secagg).

Each sampled hospital's input is the weighted sum of its sub-clients' clipped updates with
the weighted side values appended (deploy/hospital.py, `secure_input`); Flower's
`secaggplus_mod` quantises and masks it, and `SecAggPlusWorkflow` unmasks the sum of the
inputs that arrived (dropped hospitals' masks are removed from their shares). The server
then adds the central noise to that sum (pipeline `release`), so it sees the exact sum of
the hospitals' clipped updates but no hospital's own.

Flower's workflow reports a weighted mean; every input is given weight 1 so that the mean
times the number of inputs is the sum. Its quantisation range is set from the announced
bound: each coordinate of an input is at most C times the hospital's summed weights, so
nothing is clipped by the range (the step is 2 range / 2^22). Two of its failure modes are
guarded here: a workflow that halts (too few hospitals left for the threshold) returns
without a result, which stops the run with one line instead of keeping the old model; and
an even share count below the number of hospitals, which crashes it, is refused up front
(deploy/settings.py).
"""
from __future__ import annotations

import numpy as np
import torch
from flwr.app import ConfigRecord, Context
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.app import ArrayRecord, RecordDict

from federated.errors import AggregationAborted

SIDES = 2  # clipped norm, within-bound bit (each weighted like the update)
QUANTIZATION_RANGE = 1 << 22  # Flower's default; n inputs must fit its 2^32 modulus


class _OneRound(Strategy):
    """The strategy the legacy workflow calls: it hands out this round's fit instructions
    and keeps the unmasked sum. Nothing else of Flower's strategy API is used."""

    def __init__(self, instructions: list[tuple[GridClientProxy, FitIns]]):
        self.instructions, self.result, self.received = instructions, None, 0

    def configure_fit(self, server_round, parameters, client_manager):
        return self.instructions

    def aggregate_fit(self, server_round, results, failures):
        self.received = len(results)
        if results:
            self.result = parameters_to_ndarrays(results[0][1].parameters)[0]
        return None, {}

    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def secure_sum(grid, coordinator, nodes: list[int], weights: list[list[float]], round_idx: int, bound: float,
               numel: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """The sum of the sampled hospitals' inputs: (weighted update sum [P], side sums
    unweighted, the number of hospitals whose input is in it)."""
    options = coordinator.options
    if len(nodes) < 2:
        raise AggregationAborted(f"round {round_idx}: SecAgg+ needs 2 or more hospitals, {len(nodes)} took part")
    span = max(sum(w) for w in weights) * max(float(bound), 1.0)
    proxies = [GridClientProxy(node, grid, grid.run.run_id) for node in nodes]
    manager = SimpleClientManager()
    for proxy in proxies:
        manager.register(proxy)
    config = {"round": round_idx, "bound": float(bound), "flags": coordinator.flags,
              "drop": ",".join(map(str, options.drop))}
    strategy = _OneRound([(proxy, FitIns(ndarrays_to_parameters([np.asarray(w, dtype=np.float64)]), config))
                          for proxy, w in zip(proxies, weights)])
    context = LegacyContext(Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(),
                                    run_config={}), config=ServerConfig(num_rounds=1), strategy=strategy,
                            client_manager=manager)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: round_idx})
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    workflow = SecAggPlusWorkflow(num_shares=options.num_shares or len(nodes),
                                  reconstruction_threshold=options.threshold or len(nodes) // 2 + 1,
                                  max_weight=1.0, clipping_range=span, quantization_range=QUANTIZATION_RANGE,
                                  timeout=options.reply_timeout)
    workflow(grid, context)
    if strategy.result is None:
        raise AggregationAborted(f"round {round_idx}: Flower's SecAgg+ halted (fewer hospitals answered than its "
                                 "reconstruction threshold, or a stage failed), so the run stops; lower "
                                 "--reconstruction_threshold or bring the hospitals back")
    total = torch.from_numpy(np.asarray(strategy.result, dtype=np.float64) * strategy.received)
    weight = weights[0][0]  # equal weights (--flower_secagg refuses --weighted_avg): the sides' scale
    sides = {"clipped_norm": (total[numel:numel + 1] / weight).float(),
             "within_bound": (total[numel + 1:] / weight).float()}
    return total[:numel].float(), sides, strategy.received
