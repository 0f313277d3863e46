"""Personalised evaluation (--personalize_steps): each hospital's model adapted on its own
training split only, scored beside the global model; test labels are read once, after the
last round, never to select anything."""
from __future__ import annotations

import torch

from federated import loop
from federated.config import parse_config
from federated.personalize import personalize
from federated.setup import build_federation
from tests.conftest import TINY
from tests.test_loop import _run

PERSONAL = ["--client_algo", "perfedavg_fo", "--personalize_steps", "3"]


def test_adaptation_reads_only_the_hospital_s_training_split_and_repeats(tmp_path):
    fed = build_federation(parse_config(TINY + ["--save_path", str(tmp_path)] + PERSONAL))
    params = fed.trainer.flat.get()
    trains = [h.train for h in fed.data.hospitals]
    keys = [h.key for h in fed.data.hospitals]
    first = personalize(fed.trainer, params, trains, keys, steps=3, alpha=0.05, batch=8, seed=0, round_idx=2)
    again = personalize(fed.trainer, params, trains, keys, steps=3, alpha=0.05, batch=8, seed=0, round_idx=2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(not torch.equal(a, params) for a in first) and not torch.equal(first[0], first[1])
    assert torch.equal(fed.trainer.flat.get(), params)  # the working model is left at the global parameters
    # one step by hand for hospital 0: a gradient step on one of its own training batches
    one = personalize(fed.trainer, params, trains[:1], keys[:1], steps=1, alpha=0.05, batch=len(trains[0]), seed=0,
                      round_idx=2)[0]
    grad, _ = fed.trainer.batch_gradient(params, trains[0].images, trains[0].targets, None)
    torch.testing.assert_close(one, params - 0.05 * grad, rtol=1e-5, atol=1e-7)


def test_test_labels_are_read_once_after_the_last_round(tmp_path, monkeypatch):
    """A spy on the splits: every evaluation records which split it scored and how many
    rounds had run; the test split is scored only after the last round."""
    made, log = {}, []
    real_eval_set, real_evaluate, real_round = loop.eval_set, loop.evaluate, loop.run_round
    rounds = {"done": 0}

    def tagged_eval_set(data, split, **kwargs):
        es = real_eval_set(data, split, **kwargs)
        made[id(es)] = split
        return es

    def spied_evaluate(model, flat, params, es, task):
        log.append((made[id(es)], rounds["done"], isinstance(params, list)))
        return real_evaluate(model, flat, params, es, task)

    def counted_round(*args, **kwargs):
        out = real_round(*args, **kwargs)
        rounds["done"] += 1
        return out

    monkeypatch.setattr(loop, "eval_set", tagged_eval_set)
    monkeypatch.setattr(loop, "evaluate", spied_evaluate)
    monkeypatch.setattr(loop, "run_round", counted_round)
    summary = _run(TINY + ["--save_path", str(tmp_path)] + PERSONAL)["summary"]
    tests = [entry for entry in log if entry[0] == "test"]
    assert tests == [("test", 3, False), ("test", 3, True)]  # the global model, then the personalised ones
    assert log.index(tests[0]) > max(i for i, e in enumerate(log) if e[0] == "val")
    assert sum(1 for e in log if e[0] == "val" and e[2]) == 3  # personalised validation every round
    assert set(summary["test_personal_per_hospital"]) == set(summary["test_per_hospital"])
    assert summary["test_personal"].keys() == summary["test"].keys()


def test_personalised_metrics_are_logged_beside_the_global_ones(tmp_path):
    out = _run(TINY + ["--save_path", str(tmp_path)] + PERSONAL)
    metrics = out["metrics"]
    assert ",val_personal,auc," in metrics and ",test_personal,auc," in metrics
    report = out["summary"]["privacy_report"]
    assert any("personalised scores" in line for line in str(report).split("\n"))
