"""End-to-end runs of fed_train.py on a tiny federation."""
import json

import pytest
import torch

import fed_train
import federated.loop as loop
from federated.config import parse_config
from federated.local import LocalTrainer
from federated.setup import build_federation
from tests.conftest import TINY_SEG
from utils import io


def _run(args, *extra) -> dict:
    assert fed_train.main(list(args) + list(extra)) == 0
    cfg = parse_config(list(args) + list(extra))
    from federated.runfolder import run_dir
    folder = run_dir(cfg)
    return {"dir": folder, "summary": io.read_json(folder / "summary.json"),
            "metrics": (folder / "metrics.csv").read_text()}


def test_run_writes_every_artifact(tiny_args):
    out = _run(tiny_args)
    folder = out["dir"]
    for name in ("config.json", "metrics.csv", "summary.json", "best.pt", "last.pt", "last_model.pt"):
        assert (folder / name).exists(), name
    assert list((folder / "tb").glob("events.out.tfevents.*"))
    assert not list(folder.glob(".*.tmp"))  # no temporary files left behind
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["clients"] == 3 and cfg["rounds"] == 3
    s = out["summary"]
    assert s["rounds_run"] == 3 and 0 <= s["best_round"] < 3
    assert set(s["test"]) == {"auc", "acc", "sen", "spe", "f1"}
    assert len(s["test_per_hospital"]) == 3
    lines = out["metrics"].splitlines()
    assert lines[0] == "round,hospital,split,metric,value"
    # one row per round x hospital (+ mean) x metric on val, and test at the best round
    val_rows = [r for r in lines[1:] if ",val," in r]
    assert len(val_rows) == 3 * 4 * 5
    test_rows = [r for r in lines[1:] if ",test," in r]
    assert len(test_rows) == 4 * 5 and all(r.startswith(f"{s['best_round']},") for r in test_rows)


def test_same_seed_gives_identical_metrics_file(tmp_path, tiny_args):
    a = _run(tiny_args, "--exp", "a")
    b = _run(tiny_args, "--exp", "b")
    c = _run(tiny_args, "--exp", "c", "--seed", "1")
    assert a["metrics"] == b["metrics"]
    assert a["metrics"] != c["metrics"]


def crash_in_round(args, monkeypatch, round_idx: int = 2) -> None:
    """Run `args` until it is killed during round `round_idx` (as if the job died there)."""
    real_round = loop.run_round

    def crash(fed, state, shards, r, *declared):
        if r == round_idx:
            raise KeyboardInterrupt
        return real_round(fed, state, shards, r, *declared)

    monkeypatch.setattr(loop, "run_round", crash)
    assert fed_train.main(list(args)) == 130  # Ctrl-C: the message says --resume continues
    monkeypatch.setattr(loop, "run_round", real_round)


def test_resume_after_a_crash_equals_an_uninterrupted_run(tiny_args, monkeypatch):
    args = tiny_args + ["--rounds", "4", "-VN", "2"]
    full = _run(args, "--exp", "full")
    crash_in_round(args + ["--exp", "resumed"], monkeypatch)
    resumed = _run(args, "--exp", "resumed", "--resume")
    assert resumed["metrics"] == full["metrics"]
    assert resumed["summary"]["test"] == full["summary"]["test"]


def test_resume_can_extend_the_rounds(tiny_args):
    full = _run(tiny_args, "--rounds", "4", "--exp", "x")
    _run(tiny_args, "--rounds", "2", "--exp", "y", "--keep_optimizer")
    extended = _run(tiny_args, "--rounds", "4", "--exp", "y", "--resume")
    assert extended["metrics"] == full["metrics"]


def test_a_finished_run_drops_the_optimizer_state_and_says_how_to_keep_it(tiny_args, capsys):
    """The final last.pt holds no Adam moments (S x 3 x P floats) unless --keep_optimizer;
    extending such a run is refused with the flag to use."""
    out = _run(tiny_args, "--rounds", "2", "--exp", "d", "-VN", "2")
    state = torch.load(out["dir"] / "last.pt", weights_only=True)["state"]
    assert state["moments"] is None and state["moments_dropped"]
    assert fed_train.main(tiny_args + ["--rounds", "3", "--exp", "d", "-VN", "2", "--resume"]) == 2
    assert "start it with --keep_optimizer" in capsys.readouterr().err
    kept = _run(tiny_args, "--rounds", "2", "--exp", "k", "-VN", "2", "--keep_optimizer")
    moments = torch.load(kept["dir"] / "last.pt", weights_only=True)["state"]["moments"]
    numel = state["params"].numel()
    assert moments["exp_avg"].shape == (3 * 2, numel) and moments["step"].tolist() == [2.0] * 6  # 3 hospitals x 2


def test_resume_from_a_checkpoint_rounds_back_equals_an_uninterrupted_run(tiny_args, monkeypatch):
    """--ckpt_every 2, killed in round 3: the resume re-runs round 2 from the round-2 checkpoint
    (its logged rows are dropped) and ends bit-identical."""
    args = tiny_args + ["--rounds", "5", "-VN", "2", "--ckpt_every", "2", "--mode", "dpsgd", "--noise_multiplier",
                        "1.0", "--adaclip", "--ada_vn"]
    full = _run(args, "--exp", "full")
    crash_in_round(args + ["--exp", "resumed"], monkeypatch, round_idx=3)
    resumed = _run(args, "--exp", "resumed", "--resume")
    assert resumed["metrics"] == full["metrics"]
    assert resumed["summary"]["test"] == full["summary"]["test"]
    assert resumed["summary"]["privacy"] == full["summary"]["privacy"]


def test_resume_refuses_changed_flags(tiny_args, capsys):
    _run(tiny_args, "--exp", "r")
    assert fed_train.main(tiny_args + ["--exp", "r", "--resume", "--lr", "0.5"]) == 2
    assert "flags differ from the checkpoint (--lr" in capsys.readouterr().err


def test_existing_run_folder_is_not_overwritten_silently(tiny_args, capsys):
    _run(tiny_args, "--exp", "z")
    assert fed_train.main(tiny_args + ["--exp", "z"]) == 2
    assert "already exists" in capsys.readouterr().err
    _run(tiny_args, "--exp", "z", "--overwrite")


def test_test_mode_scores_a_checkpoint(tiny_args, capsys):
    out = _run(tiny_args, "--exp", "t")
    ckpt = out["dir"] / "best.pt"
    assert fed_train.main(["--test", "--ckpt", str(ckpt), "--no_progress"]) == 0
    report = json.loads((out["dir"] / "best_test.json").read_text())
    assert report["test"] == pytest.approx(out["summary"]["test"])


def test_segmentation_run_reports_dice_iou_hd95(tmp_path):
    """The paper's scores (soft Dice, IoU and HD95 as its code computes them, per batch of the
    training batch size) and the repository's hard Dice beside them."""
    out = _run(TINY_SEG + ["--save_path", str(tmp_path)])
    assert set(out["summary"]["test"]) == {"dice", "iou", "hd95", "dice_hard"}


def test_segmentation_scores_follow_the_papers_formulas_on_a_run(tmp_path):
    from federated.config import parse_config
    from federated.evaluate import eval_set, model_outputs
    from federated.setup import build_federation
    from utils.metrics import paper_segmentation_metrics
    cfg = parse_config(TINY_SEG + ["--save_path", str(tmp_path)])
    fed = build_federation(cfg)
    es = eval_set(fed.data, "test", merge=False, batch=cfg.batch)
    scores = loop.evaluate(fed.model, fed.trainer.flat, fed.trainer.flat.get(), es, fed.task)
    outputs = model_outputs(fed.model, es)
    for name, out, target in zip(es.names, outputs, es.targets.split(es.sizes)):
        assert scores[name] == paper_segmentation_metrics(out, target, batch=cfg.batch)


def test_early_stopping_stops_after_patience(tiny_args):
    out = _run(tiny_args, "--rounds", "30", "--early", "--patience", "2", "--lr", "1e-9")
    s = out["summary"]
    assert s["stopped_early"] and s["rounds_run"] == s["best_round"] + 3


def test_client_sampling_uses_a_fraction_of_hospitals(tiny_args, monkeypatch):
    seen = []
    real = LocalTrainer.update

    def spy(self, params, data, state, *, lr, gen, in_order=False):
        seen.append(len(data))
        return real(self, params, data, state, lr=lr, gen=gen, in_order=in_order)

    monkeypatch.setattr(LocalTrainer, "update", spy)
    _run(tiny_args, "-N", "4", "-sr", "0.5", "--rounds", "2")
    assert len(seen) == 2 * 2  # int(4 * 0.5) hospitals per round, one sub-client each


def test_optimizer_state_is_kept_per_subclient_across_rounds(tiny_args):
    cfg = parse_config(tiny_args + ["-VN", "2"])
    fed = build_federation(cfg)
    state = loop.initial_state(fed)
    shards = loop.subclient_data(fed, state)
    loop.run_round(fed, state, shards, 0)
    loop.run_round(fed, state, shards, 1)
    a, b = state.moments.of(0, 0), state.moments.of(0, 1)
    steps = len(shards[0][0]) // cfg.batch
    assert float(a.step[0]) == 2 * steps  # two rounds of this sub-client's own steps
    assert not torch.equal(a.exp_avg, b.exp_avg)  # distinct state per sub-client
    assert bool((a.max_exp_avg_sq >= a.exp_avg_sq).all()) and a.max_exp_avg_sq.abs().sum() > 0  # amsgrad


def test_reset_optimizer_starts_fresh_each_round(tiny_args):
    cfg = parse_config(tiny_args + ["--reset_optimizer"])
    fed = build_federation(cfg)
    state = loop.initial_state(fed)
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    assert state.moments is None  # nothing kept between rounds


def test_round_update_is_the_mean_of_local_deltas(tiny_args):
    """The server receives deltas; with FedAvg the new global model is w + mean(deltas)."""
    cfg = parse_config(tiny_args)
    fed = build_federation(cfg)
    captured = {}

    real = fed.pipeline.round

    def capture(params, deltas, part, round_idx, noise_gen, **kw):
        captured["deltas"] = deltas.clone()
        return real(params, deltas, part, round_idx, noise_gen, **kw)

    fed.pipeline.round = capture
    state = loop.initial_state(fed)
    before = state.params.clone()
    loop.run_round(fed, state, loop.subclient_data(fed, state), 0)
    assert captured["deltas"].shape == (3, before.numel())
    assert torch.allclose(state.params, before + captured["deltas"].mean(0), atol=1e-6)


@pytest.mark.parametrize("metric, best", [("auc", 2), ("acc", 1)])
def test_best_round_follows_the_selection_metric_with_strict_improvement(tiny_args, monkeypatch, metric, best):
    """The paper's code selects the round by mean validation accuracy (RSNA-ICH) with a strict
    '>'; --select_metric chooses the metric. Scripted validation scores (rounds 0-3); accuracy
    ties in round 3, which must not replace round 1."""
    from federated.evaluate import MEAN
    scripted = [{"auc": 0.6, "acc": 0.5}, {"auc": 0.5, "acc": 0.7}, {"auc": 0.7, "acc": 0.6},
                {"auc": 0.65, "acc": 0.7}]
    real = loop.evaluate

    def fake(*args):
        out = real(*args)
        if scripted:  # the four validation calls; the final test call is left as it is
            out[MEAN] = {**out[MEAN], **scripted.pop(0)}
        return out

    monkeypatch.setattr(loop, "evaluate", fake)
    out = _run(tiny_args, "--rounds", "4", "--select_metric", metric, "--exp", metric)
    assert out["summary"]["best_round"] == best
    assert out["summary"]["model_selection"] == f"best validation {metric}"


def test_paper_split_resplits_into_equal_random_parts_trained_in_order(tiny_args):
    """--subclient_split paper: before any re-split the sub-clients shuffle and drop the last
    partial batch; a re-split draws int(n / v) records each and trains them in record order,
    keeping the last partial batch (the paper's loaders); the draw is keyed by the run's
    secret and the round, so a resumed run re-draws the same split."""
    cfg = parse_config(tiny_args + ["--train_size", "23", "--subclient_split", "paper"])
    fed = build_federation(cfg)
    state = loop.initial_state(fed)
    members = [(h, 0) for h in range(cfg.clients)]
    _, results = loop.local_updates(fed, state, loop.subclient_data(fed, state), members, 0)
    assert [r.num_samples for r in results] == [23] * 3 and [r.num_steps for r in results] == [2] * 3  # 16 of 23
    loop.resplit(fed, state, 2, round_idx=0)
    assert state.in_order and [[len(i) for i in h] for h in state.subclient_indices] == [[11, 11]] * 3
    members = [(h, k) for h in range(cfg.clients) for k in range(2)]
    _, results = loop.local_updates(fed, state, loop.subclient_data(fed, state), members, 1)
    assert [r.num_steps for r in results] == [2] * 6  # 8 + 3: the last partial batch is kept
    again = loop.initial_state(fed)
    loop.resplit(fed, again, 2, round_idx=0)
    assert all(torch.equal(a, b) for x, y in zip(again.subclient_indices, state.subclient_indices)
               for a, b in zip(x, y))
    loop.resplit(fed, again, 2, round_idx=5)
    assert not all(torch.equal(a, b) for x, y in zip(again.subclient_indices, state.subclient_indices)
                   for a, b in zip(x, y))


def test_a_resumed_run_says_where_it_resumes(tiny_args, capsys):
    args = tiny_args + ["--rounds", "2", "--keep_optimizer", "--exp", "r"]
    assert fed_train.main(args) == 0
    capsys.readouterr()
    assert fed_train.main(tiny_args + ["--rounds", "4", "--keep_optimizer", "--exp", "r", "--resume"]) == 0
    assert "resuming from round 2 of 4 (the checkpoint holds rounds 0-1)" in capsys.readouterr().out


def test_resume_with_more_rounds_extends_a_named_run_into_its_own_folder(tiny_args, capsys):
    """Without --exp the folder's name holds --rounds: `--resume --rounds 4` finds the 2-round run,
    continues a copy of it in the 4-round folder and leaves the 2-round result as it was."""
    full = _run(tiny_args, "--rounds", "4", "--exp", "x")
    short = _run(tiny_args, "--rounds", "2", "--keep_optimizer")
    before = {p.name: p.read_bytes() for p in short["dir"].iterdir() if p.is_file()}
    capsys.readouterr()
    extended = _run(tiny_args, "--rounds", "4", "--keep_optimizer", "--resume")
    assert f"extending {short['dir']}" in capsys.readouterr().out
    assert extended["dir"] != short["dir"] and extended["summary"]["rounds_run"] == 4
    assert extended["metrics"] == full["metrics"]
    assert {p.name: p.read_bytes() for p in short["dir"].iterdir() if p.is_file()} == before


def test_a_resumed_run_reports_no_negative_time_share(tiny_args, monkeypatch):
    """The checkpoint stores the time of every round it holds: local training, evaluation and
    checkpoints never add up to more than the rounds' time, before or after a resume."""
    args = tiny_args + ["--rounds", "4", "--exp", "t"]
    crash_in_round(args, monkeypatch)
    from federated.runfolder import run_dir
    timing = torch.load(run_dir(parse_config(args)) / "last.pt", weights_only=True)["state"]["timing"]
    assert timing["local_s"] + timing["eval_s"] + timing["checkpoint_s"] <= timing["total_s"], timing
    summary = _run(args, "--resume")["summary"]["timing"]
    assert summary["overhead_s"] >= 0 and 0 <= summary["outside_local_fraction"] <= 1


def test_threads_auto_is_printed_and_kept_in_the_config(tiny_args, capsys):
    i = tiny_args.index("--threads")
    args = tiny_args[:i] + tiny_args[i + 2:] + ["--rounds", "1"]  # the default: auto
    out = _run(args)
    threads = json.loads((out["dir"] / "config.json").read_text())["threads"]
    assert threads >= 1 and f"threads: {threads} (--threads auto" in capsys.readouterr().out
    assert parse_config(args).run_name() == out["dir"].name  # not part of the run's identity
