"""Command-line flags -> one validated, frozen Config.

Flag names follow the paper's repository (med-air/Client-DP-FL, fed_train.py) so its
sweep lines run unchanged; defaults left unset on the command line come from the
dataset's preset, which is sized for a 2-core CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from federated.choices import (CHEST_XRAY_FINDINGS, DATASETS, ENGINES, MEDMNIST, METRIC_NAMES, MODELS, PARTITIONS,
                               SAMPLING_MODES, SHIFTED, SYNTHETIC, UNCERTAIN_POLICIES)

LOCAL_OPTIMIZERS = ("adam", "nadam", "sgd")
CLIENT_ALGOS = ("sgd", "perfedavg_fo", "perfedavg_hf", "pppml")  # federated/perfedavg.py: PERFEDAVG_ALGOS after sgd  # federated.adam.LOCAL_OPTIMIZERS (tests keep them equal)
# Non-private server optimizers and their client-level DP versions (the paper's names).
PUBLIC_MODES = ("fedavg", "fedadam", "fednova", "fed2rmsprop")
PRIVATE_MODES = ("dpsgd", "dpadam", "dpnova", "dp2rmsprop")
MODES = PUBLIC_MODES + PRIVATE_MODES
DP_LEVELS = ("none", "sample", "update_local")
SECURE_AGGREGATION = ("none", "secagg+", "ckks", "cyclic")
AUDIT_UNITS = ("subclient", "hospital")
NOISE_AT = ("server", "clients")
SECAGG_STAGES = ("advertise", "share", "mask", "unmask")  # privacy.secagg.protocol.STAGES (a test keeps them equal)
MIN_DELTA = 1e-10  # PRV's and PLD's grids resolve no delta near machine precision
MAX_IMG_SIZE = 2048  # larger than any dataset here (the paper: 224 and 256 px)
AUTO_MODEL = "auto"
# Flags that say how a run is carried out, not what it computes: left out of its identity.
# (--threads, --engine and --physical_batch, how DP-SGD's logical batch is cut, change only
# the order of float sums.)
RUN_CONTROL_FLAGS = frozenset({"exp", "save_path", "resume", "overwrite", "progress", "gpu", "ckpt_every", "test",
                               "ckpt", "threads", "engine", "engine_chunk", "physical_batch", "keep_optimizer"})  # --data folder: cnn for classification, unet_small for segmentation

# Per-dataset defaults for flags the user leaves unset (the CPU default job).
PRESETS: dict[str, dict] = {
    "synthetic-ich": dict(clients=20, model="cnn", img_size=32, train_size=64, val_size=20,
                          test_size=20, batch=16, lr=2e-3, rounds=40),
    "synthetic-prostate": dict(clients=6, model="unet_small", img_size=32, train_size=60,
                               val_size=20, test_size=20, batch=8, lr=1e-3, rounds=30),
    "synthetic-blood": dict(clients=5, model="dpresnet_small", img_size=28, train_size=160, val_size=40,
                            test_size=40, batch=16, lr=1e-3, rounds=15),
    # sized so that DP-SGD at epsilon 10 trains (experiments/cxr_fairness): 5 epochs, batch 128
    "synthetic-cxr": dict(clients=1, model="resnet9_small", img_size=32, train_size=6000, val_size=1000,
                          test_size=2000, batch=128, lr=1e-3, rounds=5),
    # the PPPML-HMI tasks: 5 hospitals (the system's 2-5)
    "synthetic-chestct": dict(clients=5, model="cnn", img_size=32, train_size=60, val_size=20, test_size=20,
                              batch=16, lr=1e-3, rounds=20),
    "synthetic-covidseg": dict(clients=5, model="unet_small", img_size=32, train_size=60, val_size=20,
                               test_size=20, batch=8, lr=1e-3, rounds=20),
}
# Real data: the paper's settings (RSNA-ICH, prostate), MedMNIST-sized ones otherwise.
_REAL = dict(train_size=0, val_size=0, test_size=0)
PRESETS.update({
    "RSNA-ICH": dict(clients=20, model="densenet121", img_size=224, batch=16, lr=3e-4, rounds=100, **_REAL),
    "prostate": dict(clients=6, model="unet", img_size=256, batch=8, lr=1e-3, rounds=100, **_REAL),
    # the radiograph study: ResNet-9, a logical batch of 128 (its images are 512 px; 224 here)
    "chest-xray": dict(clients=1, model="resnet9", img_size=224, batch=128, lr=2e-4, rounds=20, **_REAL),
    "folder": dict(clients=1, model=AUTO_MODEL, img_size=64, batch=16, lr=1e-3, rounds=50, **_REAL),
    **{name: dict(clients=10, model="cnn", img_size=28, batch=32, lr=1e-3, rounds=50, **_REAL)
       for name in MEDMNIST},
})
# The paper's code selects the best round by mean validation accuracy on RSNA-ICH (and by
# Dice, the primary metric, on prostate).
PAPER_SELECTION = {"RSNA-ICH": "acc"}
# --scale paper: the paper's regime on the synthetic tasks, with a model and resolution a
# 2-core CPU trains in about half a minute per run. The hospital sizes (the paper's divided
# by PAPER_SIZE_DIVISOR) live with the generators (datasets/synthetic.py); the divisor and
# the number of sites are repeated here so that flags are checked without torch
# (tests/test_config.py keeps them equal).
PAPER_SIZE_DIVISOR = 10
PAPER_SITES = {"synthetic-ich": 20, "synthetic-prostate": 6}
_FROM_SITES = dict(train_size=0, val_size=0, test_size=0)  # 0: per-site sizes
PAPER_PRESETS = {
    "synthetic-ich": dict(clients=20, model="cnn_narrow", img_size=16, batch=16, lr=2e-3, rounds=100, **_FROM_SITES),
    "synthetic-prostate": dict(clients=6, model="unet_small", img_size=32, batch=8, lr=1e-3, rounds=100,
                               **_FROM_SITES),
}
SCALES = ("cpu", "paper")


# Datasets whose default is the paper's sub-client split (--subclient_split).
PAPER_SPLIT_DATA = ("RSNA-ICH", "prostate")
SUBCLIENT_SPLITS = ("hash", "paper")
# privacy.accountants.NUMERIC_LIMIT, repeated here so that flags are checked without torch
# (tests/test_config.py keeps them equal): PLD and PRV give no value beyond it.
NUMERIC_EPSILON_LIMIT = 500.0
PRESET_KEYS = ("clients", "model", "img_size", "train_size", "val_size", "test_size", "batch", "lr", "rounds")


class ConfigError(ValueError):
    """A flag value that cannot run; the message names the flag and what is allowed."""


@dataclass(frozen=True)
class Config:
    # data
    data: str = "synthetic-ich"
    img_size: int = 32
    train_size: int = 40
    val_size: int = 20
    test_size: int = 20
    size_skew: float = 0.0
    site_shift: float = 1.0     # synthetic-chestct/-covidseg: scanner and population shift between sites
    data_root: str | None = None
    image_dir: str | None = None
    split_dir: str | None = None
    findings: str = ",".join(CHEST_XRAY_FINDINGS)
    uncertain: str = "zeros"
    partition: str = "dirichlet"
    dirichlet_alpha: float = 0.5
    merge: bool = False
    debug: bool = False
    # federation
    mode: str = "fedavg"
    clients: int = 20
    virtual_clients: int = 1
    balance_split: bool = False
    subclient_split: str = "hash"
    scale: str = "cpu"
    rounds: int = 30
    local_epochs: int = 1
    batch: int = 16
    lr: float = 1e-3
    local_opt: str = "adam"
    client_algo: str = "sgd"    # sgd: the local optimizer's steps; perfedavg_*: Per-FedAvg's
    alpha: float = 0.01         # Per-FedAvg's personalising step
    beta: float = 0.005         # Per-FedAvg's meta step
    hf_delta: float = 1e-3      # Per-FedAvg HF's finite-difference width
    personalize_steps: int = 0  # >0: also score each hospital's model adapted by that many steps at --alpha
    lr_decay: float = -1.0
    sample_rate: float = 1.0
    client_sampling: str = "fixed"
    weighted_avg: bool = False
    reset_optimizer: bool = False
    early: bool = False
    select_metric: str = ""  # validation metric that picks the best round; "" = the task's primary one
    seg_loss: str = "dice"
    patience: int = 20
    adam_lr: float = 0.1
    rmsprop_lr: float = 1.0
    dp2_interval: int = 3
    # privacy
    noise_multiplier: float | None = None
    epsilon: float | None = None
    delta: float = 1e-3
    S: float = 10.0
    adaclip: bool = False
    noclip: bool = False
    accountant: str = "rdp"
    dp_mode: str = "overhead"
    target_unit: str = "subclient"
    secure_rng: bool = False
    strict_dp: bool = False
    clip_quantile: float = 0.5
    clip_lr: float = 0.2
    clip_count_noise: float = 5.0
    norm_sum_noise: float = 5.0
    ada_vn: bool = False
    init_vn: bool = False
    max_vn: int = 0  # 0: the smallest hospital's training size // --batch
    ada_stable: bool = False
    ada_prog: bool = False
    # local DP inside each hospital
    dp_level: str = "none"
    max_grad_norm: float = 1.0
    sample_noise: float | None = None
    sample_epsilon: float | None = None
    sample_delta: float = 1e-5
    physical_batch: int = 0
    grad_sample_mode: str = "hooks"
    local_clip: float = 1.0
    local_noise: float | None = None
    local_epsilon: float | None = None
    local_delta: float = 1e-5
    # secure aggregation
    secure_agg: str = "none"
    secagg_neighbours: int = 0  # 0: every other sub-client
    secagg_threshold: int = 0   # 0: a majority of each input's share holders, plus one
    secagg_bits: int = 32
    dropout_rate: float = 0.0
    secagg_drops: str = ""      # "stage:i,j;stage:k": inputs that drop at a stage, every round
    noise_at: str = "server"    # clients: each sub-client adds a noise share (Skellam or Gaussian; distributed DP)
    # empirical privacy audit (federated/canaries.py; read by python -m attacks.audit)
    audit_canaries: int = 0
    audit_unit: str = "subclient"
    # model
    model: str = "cnn"
    # run
    seed: int = 0
    exp: str | None = None
    save_path: str = "./experiments"
    resume: bool = False
    overwrite: bool = False
    ckpt_every: int = 10
    keep_optimizer: bool = False
    gpu: str = "0"
    test: bool = False
    ckpt: str | None = None
    progress: bool = True
    threads: int = 0  # 0: auto, the cores free when the run starts (federated.run.resolve_threads)
    engine: str = "auto"
    engine_chunk: int = 0
    bootstrap: int = 1000

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(values: dict) -> "Config":
        known = {f.name for f in dataclasses.fields(Config)}
        return Config(**{k: v for k, v in values.items() if k in known})

    def identity(self) -> dict:
        """The flags that make this run's result, where they differ from the defaults (so that a
        flag added later, at its default, keeps every earlier run's identity)."""
        defaults = Config()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in RUN_CONTROL_FLAGS and getattr(self, f.name) != getattr(defaults, f.name)}

    def identity_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]

    def run_name(self) -> str:
        """The run folder's name: --exp, or the paper code's pattern of the main flags followed
        by a hash of every flag that changes the result (two settings never share a folder)."""
        if self.exp:
            return self.exp
        return f"{self.readable_name()}_{self.identity_hash()}"

    def readable_name(self) -> str:
        """The main flags, in the pattern of the paper's code."""
        name = (f"{self.mode}_rounds{self.rounds}_localE{self.local_epochs}_lr{self.lr}_batch{self.batch}"
                f"_N{self.clients}_sr{self.sample_rate}_VN{self.virtual_clients}")
        name += self._server_info() + self._dp_info()
        name += "_MergeValTest" if self.merge else ""
        name += "_WeightedAvg" if self.weighted_avg else "_PureAvg"
        name += "_early_stop" if self.early else ""
        name += f"_lrdecay{self.lr_decay}" if self.lr_decay > 0 else ""
        name += "_balance_split" if self.balance_split else ""
        name += "_paperSplit" if self.subclient_split == "paper" else ""
        name += "_adaVN" if self.ada_vn else ""
        name += "_adaStable" if self.ada_stable else ""
        name += "_adaProg" if self.ada_prog else ""
        name += "_InitVN" if self.init_vn else ""
        name += f"_maxVN{self.max_vn}" if self.max_vn else ""
        name += "_strict" if self.strict_dp else ""
        name += self._local_dp_info()
        name += f"_{self.local_opt}" if self.local_opt != "adam" else ""
        name += f"_{self.client_algo}_a{self.alpha}_b{self.beta}" if self.client_algo != "sgd" else ""
        name += f"_personal{self.personalize_steps}" if self.personalize_steps else ""
        name += f"_shift{self.site_shift}" if self.site_shift != 1.0 else ""
        name += self._label_info()
        name += f"_audit{self.audit_canaries}{self.audit_unit}" if self.audit_canaries else ""
        name += "_debug" if self.debug else ""
        return name

    @property
    def private(self) -> bool:
        return self.mode in PRIVATE_MODES

    @property
    def audit_subclients(self) -> int:
        """Sub-clients the audit's canaries add to the planned federation: K, or K v."""
        return self.audit_canaries * (self.virtual_clients if self.audit_unit == "hospital" else 1)

    @property
    def adaptive_subclients(self) -> bool:
        return self.ada_vn or self.init_vn

    def _local_dp_info(self) -> str:
        if self.dp_level == "sample":
            noise = f"z{self.sample_noise}" if self.sample_noise is not None else f"eps{self.sample_epsilon}"
            return f"_sampleDP_{noise}_C{self.max_grad_norm}" + ("_ghost" if self.grad_sample_mode == "ghost" else "")
        if self.dp_level == "update_local":
            noise = f"z{self.local_noise}" if self.local_noise is not None else f"eps{self.local_epsilon}"
            return f"_localDP_{noise}_C{self.local_clip}"
        return ""

    def _label_info(self) -> str:
        """chest-xray: the uncertain-label policy and the findings, where not the defaults."""
        if self.data != "chest-xray":
            return ""
        name = "_Uones" if self.uncertain == "ones" else ""
        if self.findings != ",".join(CHEST_XRAY_FINDINGS):
            name += "_findings-" + "-".join(f.strip().replace(" ", "") for f in self.findings.split(","))
        return name

    def _server_info(self) -> str:
        if self.mode in ("fedadam", "dpadam"):
            return f"_adamlr{self.adam_lr}"
        if self.mode in ("fed2rmsprop", "dp2rmsprop"):
            return f"_rmsproplr{self.rmsprop_lr}_interval{self.dp2_interval}"
        return ""

    def _dp_info(self) -> str:
        if not self.private:
            return ""
        if self.dp_mode == "bounded":
            info = f"_bounded_epsilon{self.epsilon}_z{self.noise_multiplier}_delta{self.delta}"
        elif self.epsilon is not None:
            info = f"_overhead_epsilon{self.epsilon}_delta{self.delta}"
        else:
            info = f"_overhead_z{self.noise_multiplier}_delta{self.delta}"
        info += "_adaclip" if self.adaclip else ("_Noclip" if self.noclip else f"_S{self.S}")
        return info + ("" if self.accountant == "rdp" else f"_{self.accountant}")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line naming the problem, not the whole usage block."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where it says something: not for switches, not for unset
    values (those say "default: preset" or describe what happens without them)."""
    def _get_help_string(self, action):
        if any(action.default is v for v in (None, True, False, argparse.SUPPRESS)) or action.default == "" or \
                "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="fed_train.py", usage="%(prog)s [flags]  (each group below; unset sizes come from the dataset preset)",
        description="Simulate federated training across hospitals and their sub-clients.",
        formatter_class=_HelpFormatter)
    # datasets with the same preset share one entry; real data's sizes (0: the files') are left out
    shared: dict[str, list[str]] = {}
    for name, vals in PRESETS.items():
        shared.setdefault(", ".join(f"{k}={v}" for k, v in vals.items() if not (k in _REAL and v == 0)),
                          []).append(name)
    preset = "per dataset: " + "; ".join(f"{', '.join(names)}: {vals}" for vals, names in shared.items())

    g = p.add_argument_group("data")
    g.add_argument("--data", default="synthetic-ich",
                   help=f"dataset: {', '.join(DATASETS)}. RSNA-ICH labels are the 'healthy' column, as the "
                        "paper's code: class 1 = healthy, so AUC is that of P(healthy)")
    g.add_argument("--scale", default="cpu", choices=SCALES,
                   help="synthetic-ich/-prostate: cpu (small hospitals) or paper (the paper's hospitals "
                        f"/ {PAPER_SIZE_DIVISOR}, 100 rounds, its split and selection)")
    g.add_argument("--img_size", type=int, default=None, help="image side in pixels (default: preset)")
    g.add_argument("--train_size", type=int, default=None, help="mean training images per hospital (default: preset)")
    g.add_argument("--val_size", type=int, default=None, help="validation images per hospital (default: preset)")
    g.add_argument("--test_size", type=int, default=None, help="test images per hospital (default: preset)")
    g.add_argument("--size_skew", type=float, default=0.0,
                   help="log-normal spread of hospital training-set sizes (0 = equal sizes)")
    g.add_argument("--site_shift", type=float, default=1.0,
                   help="synthetic-chestct/-covidseg: how much sites differ (scanner and population); 0 = IID")
    g.add_argument("--data_root", default=None,
                   help="real data: prostate PNG root, folder of MedMNIST .npz files, or --data folder's root")
    g.add_argument("--image_dir", default=None,
                   help="RSNA-ICH: the flat folder of PNGs; chest-xray: the folder the tables' Path column is under")
    g.add_argument("--split_dir", default=None,
                   help="RSNA-ICH: folder of train/validate/test.csv; prostate: folder of <Site>.json (default: "
                        "--data_root); chest-xray: folder of train/valid/test.csv (Path, Sex, Age, findings)")
    g.add_argument("--findings", default=",".join(CHEST_XRAY_FINDINGS),
                   help="chest-xray: comma-separated finding columns to predict")
    g.add_argument("--uncertain", default="zeros", choices=UNCERTAIN_POLICIES,
                   help="chest-xray: uncertain (-1) labels count as negative (zeros) or positive (ones)")
    g.add_argument("--partition", default="dirichlet", choices=PARTITIONS,
                   help="MedMNIST hospitals: Dirichlet label skew, quantity skew, or iid")
    g.add_argument("--dirichlet_alpha", type=float, default=0.5, help="MedMNIST: Dirichlet concentration")
    g.add_argument("--merge", action="store_true", help="pool all hospitals' val/test sets into one")
    g.add_argument("--debug", action="store_true", help="synthetic data: tiny splits (4 batches per hospital) for a quick check")

    g = p.add_argument_group("federation")
    g.add_argument("--mode", default="fedavg", choices=MODES, metavar="MODE",
                   help=f"server optimizer; non-private: {', '.join(PUBLIC_MODES)}; with client-level DP: "
                        f"{', '.join(PRIVATE_MODES)} (DP-FedAvg, DP-FedAdam, DP-FedNova, DP2-RMSProp)")
    g.add_argument("-N", "--clients", type=int, default=None, help="number of hospitals (default: preset)")
    g.add_argument("-VN", "--virtual_clients", type=int, default=1, help="sub-clients per hospital")
    g.add_argument("--balance_split", action="store_true",
                   help="hand the N*VN sub-clients to hospitals by size, so sub-clients are of similar size")
    g.add_argument("--subclient_split", default=None, choices=SUBCLIENT_SPLITS,
                   help="hash: keyed hash of each record; paper: int(n/VN) random records each, after a "
                        "re-split unshuffled, last batch kept (a patient is charged all VN) "
                        f"(default: paper for {', '.join(PAPER_SPLIT_DATA)}, --scale paper)")
    g.add_argument("--rounds", type=int, default=None, help="communication rounds (default: preset)")
    g.add_argument("--local_epochs", type=int, default=1, help="local epochs per round")
    g.add_argument("--batch", type=int, default=None, help="local batch size (default: preset)")
    g.add_argument("--lr", type=float, default=None, help="local learning rate (default: preset)")
    g.add_argument("--local_opt", default="adam", choices=LOCAL_OPTIMIZERS,
                   help="local optimizer: adam (amsgrad, the paper's), nadam (the radiograph study's) or sgd (plain)")
    g.add_argument("--client_algo", default="sgd", choices=CLIENT_ALGOS,
                   help="local algorithm: sgd (the --local_opt steps); Per-FedAvg, first-order or Hessian-free; or "
                        "pppml, the published PPPML-HMI code's alternating steps (not Per-FedAvg)")
    g.add_argument("--alpha", type=float, default=0.01, help="Per-FedAvg: the personalising step size")
    g.add_argument("--beta", type=float, default=0.005, help="Per-FedAvg: the meta step size")
    g.add_argument("--hf_delta", type=float, default=1e-3, help="Per-FedAvg HF: the finite-difference width")
    g.add_argument("--personalize_steps", type=int, default=0, metavar="K",
                   help="also score each hospital's model after K SGD steps at --alpha on its own training split")
    g.add_argument("--lr_decay", type=float, default=-1.0,
                   help="multiply the local lr by this every round (<= 0: off)")
    g.add_argument("-sr", "--sample_rate", type=float, default=1.0,
                   help="fraction of hospitals that take part each round, in (0, 1]")
    g.add_argument("--client_sampling", default="fixed", choices=SAMPLING_MODES,
                   help="fixed: int(N*sr) hospitals without replacement; poisson: each with prob. sr")
    g.add_argument("--weighted_avg", action="store_true",
                   help="weight updates by sample count (default: plain 1/K mean, as the paper)")
    g.add_argument("--reset_optimizer", action="store_true",
                   help="fresh local Adam state every round instead of keeping it across rounds")
    g.add_argument("--early", action="store_true", help="stop when val has not improved for --patience rounds")
    g.add_argument("--seg_loss", default="dice", choices=("dice", "dicece"),
                   help="soft Dice (the paper's) or Dice + BCE")
    g.add_argument("--select_metric", default=None, choices=METRIC_NAMES, metavar="METRIC",
                   help="val metric for the best round (RSNA-ICH: acc)")
    g.add_argument("--patience", type=int, default=20, help="rounds without improvement before --early stops")
    g.add_argument("--adam_lr", type=float, default=0.1, help="server learning rate of fedadam/dpadam")
    g.add_argument("--rmsprop_lr", type=float, default=1.0,
                   help="server learning rate of fed2rmsprop/dp2rmsprop in its preconditioned rounds")
    g.add_argument("--dp2_interval", type=int, default=3,
                   help="fed2rmsprop/dp2rmsprop: rounds per block (accumulate, then precondition)")

    g = p.add_argument_group("privacy (client level; the private --mode values)")
    g.add_argument("--noise_multiplier", type=float, default=None, help="Gaussian noise multiplier z (std z*C on the sum)")
    g.add_argument("--epsilon", type=float, default=None,
                   help="target epsilon: calibrates z for --rounds (overhead mode) or caps spending (bounded mode)")
    g.add_argument("--delta", type=float, default=1e-3, help="delta of the reported (epsilon, delta)")
    g.add_argument("--S", type=float, default=10.0, help="fixed clip bound C (initial C with --strict_dp --adaclip)")
    g.add_argument("--adaclip", action="store_true",
                   help="adaptive clip bound: median update norm capped at 25 (private quantile with --strict_dp)")
    g.add_argument("--noclip", action="store_true", help="ablation: no clipping (no finite privacy guarantee)")
    g.add_argument("--accountant", default="rdp", choices=("rdp", "prv", "pld"),
                   help="accountant for per-round epsilon and calibration (the summary reports all three)")
    g.add_argument("--dp_mode", default="overhead", choices=("overhead", "bounded"),
                   help="overhead: report the epsilon of a fixed z; bounded: stop before a round exceeds --epsilon")
    g.add_argument("--target_unit", default="subclient", choices=("subclient", "hospital", "patient"),
                   help="what --epsilon protects: a sub-client (the paper's), a hospital or a patient (a record)")
    g.add_argument("--secure_rng", action="store_true",
                   help="draw DP noise, sampling and the sub-client key from the OS (a deployment's; not reproducible)")
    g.add_argument("--strict_dp", action="store_true",
                   help="privatise everything data-dependent that leaves a hospital: clip bound and intermediary "
                        "statistic noised and charged; no training losses; the final model, not the best-val one")
    g.add_argument("--clip_quantile", type=float, default=0.5, help="--strict_dp --adaclip: target quantile gamma")
    g.add_argument("--clip_lr", type=float, default=0.2, help="--strict_dp --adaclip: geometric step eta")
    g.add_argument("--clip_count_noise", type=float, default=5.0,
                   help="--strict_dp --adaclip: noise std sigma_b on the count of unclipped updates")
    g.add_argument("--norm_sum_noise", type=float, default=5.0,
                   help="--strict_dp: noise multiplier on the released sum of clipped update norms")
    g.add_argument("--ada_vn", action="store_true",
                   help="adaptive intermediaries: a discarded probe round, then v re-chosen every round")
    g.add_argument("--init_vn", action="store_true", help="choose v once from a discarded probe round")
    g.add_argument("--max_vn", type=int, default=0,
                   help="largest v the rule may choose (default: smallest hospital // --batch; reads sizes)")
    g.add_argument("--ada_stable", action="store_true", help="intermediary variant: v' = floor(factor) * v")
    g.add_argument("--ada_prog", action="store_true", help="intermediary variant: move half-way to the new v")

    g = p.add_argument_group("local DP inside each hospital (--dp_level; combines with the private --mode values)")
    g.add_argument("--dp_level", default="none", choices=DP_LEVELS,
                   help="sample: local steps are DP-SGD (Opacus; per-sample clipping, Poisson batches); "
                        "update_local: each sub-client clips its whole update and adds calibrated noise before sending")
    g.add_argument("--max_grad_norm", type=float, default=1.0, help="--dp_level sample: per-sample clip bound")
    g.add_argument("--sample_noise", type=float, default=None, help="--dp_level sample: DP-SGD noise multiplier")
    g.add_argument("--sample_epsilon", type=float, default=None,
                   help="--dp_level sample: target epsilon per hospital over all planned steps (sets the noise)")
    g.add_argument("--sample_delta", type=float, default=1e-5, help="--dp_level sample: delta")
    g.add_argument("--physical_batch", type=int, default=0,
                   help="--dp_level sample: largest physical batch (BatchMemoryManager); 0 = whole logical batch")
    g.add_argument("--grad_sample_mode", default="hooks", choices=("hooks", "ghost"),
                   help="--dp_level sample: per-sample gradients from hooks, or Opacus's ghost clipping "
                        "(norms only; classification losses)")
    g.add_argument("--local_clip", type=float, default=1.0, help="--dp_level update_local: L2 bound on each update")
    g.add_argument("--local_noise", type=float, default=None,
                   help="--dp_level update_local: noise multiplier (std = multiplier x 2 x --local_clip)")
    g.add_argument("--local_epsilon", type=float, default=None,
                   help="--dp_level update_local: target epsilon per sub-client over all --rounds (sets the noise)")
    g.add_argument("--local_delta", type=float, default=1e-5, help="--dp_level update_local: delta")

    g = p.add_argument_group("secure aggregation (the server sees masked inputs and their sum only)")
    g.add_argument("--secure_agg", default="none", choices=SECURE_AGGREGATION,
                   help="secagg+: SecAgg+ sums the quantised updates (default: none)")
    g.add_argument("--secagg_neighbours", type=int, default=0, metavar="K",
                   help="masking neighbours per input, even (default: 0 = all)")
    g.add_argument("--secagg_threshold", type=int, default=0, metavar="T",
                   help="shares that rebuild a secret (default: 0 = majority+1)")
    g.add_argument("--secagg_bits", type=int, default=32, metavar="B", help="sum in the ring Z_2^B")
    g.add_argument("--dropout_rate", type=float, default=0.0, metavar="P", help="drop chance per input and round")
    g.add_argument("--secagg_drops", default="", metavar="SPEC", help="fixed drop-outs, e.g. 'mask:0,3;unmask:5'")
    g.add_argument("--noise_at", default="server", choices=NOISE_AT,
                   help="clients: each input adds a share (Skellam in the secagg+ ring, Gaussian before ckks/cyclic "
                        "encryption); the server adds none")

    g = p.add_argument_group("empirical privacy audit (read the result with: python -m attacks.audit RUN_DIR)")
    g.add_argument("--audit_canaries", type=int, default=0, metavar="K",
                   help="insert K canary units whose updates are random directions clipped to C, each with a secret "
                        "in/out bit (0: none)")
    g.add_argument("--audit_unit", default="subclient", choices=AUDIT_UNITS,
                   help="what a canary is: one sub-client, or a hospital of v sub-clients sending the same direction")

    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help=f"architecture: {', '.join(MODELS)} (default: preset)")

    g = p.add_argument_group("logging, checkpoints and engine")
    g.add_argument("--seed", type=int, default=0, help="seed for data, splits, sampling and training")
    g.add_argument("--exp", default=None, help="run folder name (default: built from the flags)")
    g.add_argument("--save_path", default="./experiments", help="results root: SAVE_PATH/DATA/seedS/RUN")
    g.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    g.add_argument("--ckpt_every", type=int, default=10, help="write last.pt every K rounds and at the end")
    g.add_argument("--keep_optimizer", action="store_true",
                   help="keep Adam states in the final last.pt (to extend it)")
    g.add_argument("--gpu", default="0", help="CUDA device index, or 'cpu'")
    g.add_argument("--test", action="store_true", help="only evaluate --ckpt on every hospital's test set")
    g.add_argument("--ckpt", default=None, help="checkpoint to evaluate with --test")
    g.add_argument("--no_progress", dest="progress", action="store_false", help="hide the progress bar")
    g.add_argument("--threads", type=_threads, default="auto", metavar="N|auto",
                   help="torch CPU threads; auto: the cores free at the start (fix N to rerun bit-identically)")
    g.add_argument("--engine", default="auto", choices=("auto",) + ENGINES,
                   help="train sub-clients one by one (loop) or together (batched); auto: the faster measured")
    g.add_argument("--engine_chunk", type=int, default=0,
                   help="--engine batched: most sub-clients at once (0: what fits)")
    g.add_argument("--bootstrap", type=int, default=1000,
                   help="sex/age datasets: test-set bootstrap resamples for the fairness 95%% intervals")
    p.epilog = f"Unset defaults come from the dataset preset ({preset})."
    return p


def _threads(text: str) -> int:
    if text == "auto":
        return 0
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--threads must be an integer >= 1 or auto (got {text!r})")
    return int(text)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_delta(flag: str, delta: float) -> None:
    _check(MIN_DELTA <= delta < 1, f"{flag} must be in [{MIN_DELTA:g}, 1): a smaller delta is below what the PRV and "
                                   f"PLD accountants resolve (got {delta:g})")


def validate(cfg: Config) -> None:
    """Reject values that cannot run, naming the flag and the allowed range."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        _check(not isinstance(value, float) or math.isfinite(value),
               f"--{f.name} must be a finite number (got {value})"
               + ("; for no client-level DP use a non-private --mode (fedavg, ...)" if f.name == "epsilon" else ""))
    _check(all(f.strip() for f in cfg.findings.split(",")),
           f"--findings {cfg.findings!r} has an empty name; give comma-separated column names")
    _check(cfg.bootstrap >= 1, f"--bootstrap must be >= 1 resample (got {cfg.bootstrap}); the study uses 1000")
    for flag in ("epsilon", "sample_epsilon", "local_epsilon"):
        target = getattr(cfg, flag)
        _check(cfg.accountant == "rdp" or target is None or target <= NUMERIC_EPSILON_LIMIT,
               f"--{flag} {target} with --accountant {cfg.accountant}: PLD and PRV give no value beyond epsilon "
               f"{NUMERIC_EPSILON_LIMIT:g} (their grids overflow); use --accountant rdp or a smaller target")
    _check(cfg.exp is None or (cfg.exp not in ("", ".", "..") and "/" not in cfg.exp and "\\" not in cfg.exp),
           f"--exp {cfg.exp!r} must be one folder name (no '/', '\\', '.' or '..'): the run is written in "
           "SAVE_PATH/DATA/seedS/EXP; use --save_path for another place")
    _check(cfg.data in DATASETS, f"--data {cfg.data!r} is unknown; choose one of: {', '.join(DATASETS)}")
    _check(cfg.model in MODELS or cfg.model == AUTO_MODEL,
           f"--model {cfg.model!r} is unknown; choose one of: {', '.join(MODELS)}")
    _check(cfg.mode in MODES, f"--mode {cfg.mode!r} is unknown; choose one of: {', '.join(MODES)}")
    _check(cfg.clients >= 1, f"-N/--clients must be >= 1 (got {cfg.clients})")
    _check(cfg.virtual_clients >= 1, f"-VN/--virtual_clients must be >= 1 (got {cfg.virtual_clients})")
    _check(0 < cfg.sample_rate <= 1, f"-sr/--sample_rate must be in (0, 1] (got {cfg.sample_rate})")
    _check(cfg.rounds >= 1, f"--rounds must be >= 1 (got {cfg.rounds})")
    _check(cfg.local_epochs >= 1, f"--local_epochs must be >= 1 (got {cfg.local_epochs})")
    _check(cfg.batch >= 1, f"--batch must be >= 1 (got {cfg.batch})")
    _check(cfg.lr > 0, f"--lr must be > 0 (got {cfg.lr})")
    _check(cfg.lr_decay <= 0 or cfg.lr_decay <= 1, f"--lr_decay must be in (0, 1], or <= 0 for off (got {cfg.lr_decay})")
    _check(16 <= cfg.img_size <= MAX_IMG_SIZE and cfg.img_size % 4 == 0,
           f"--img_size must be a multiple of 4 in [16, {MAX_IMG_SIZE}] (got {cfg.img_size})")
    _check(0 <= cfg.seed < 2 ** 63, f"--seed must be in [0, 2^63) (got {cfg.seed})")
    if cfg.data in SYNTHETIC and cfg.scale != "paper":  # --scale paper: the per-site sizes
        _check(cfg.train_size >= 1, f"--train_size must be >= 1 (got {cfg.train_size})")
        _check(cfg.val_size >= 2 and cfg.test_size >= 2,
               f"--val_size and --test_size must be >= 2 (got {cfg.val_size}, {cfg.test_size})")
    _check(cfg.dirichlet_alpha > 0, f"--dirichlet_alpha must be > 0 (got {cfg.dirichlet_alpha})")
    _check(cfg.size_skew >= 0, f"--size_skew must be >= 0 (got {cfg.size_skew})")
    _check(cfg.site_shift >= 0, f"--site_shift must be >= 0 (got {cfg.site_shift})")
    _check(cfg.site_shift == 1.0 or cfg.data in SHIFTED,
           f"--site_shift applies to {', '.join(SHIFTED)}, not --data {cfg.data}; drop it")
    _check(cfg.patience >= 1, f"--patience must be >= 1 (got {cfg.patience})")
    _check(cfg.adam_lr > 0, f"--adam_lr must be > 0 (got {cfg.adam_lr})")
    _check(cfg.rmsprop_lr > 0, f"--rmsprop_lr must be > 0 (got {cfg.rmsprop_lr})")
    _check(cfg.dp2_interval >= 1, f"--dp2_interval must be >= 1 (got {cfg.dp2_interval})")
    _check(cfg.ckpt_every >= 1, f"--ckpt_every must be >= 1 (got {cfg.ckpt_every})")
    _check(cfg.engine_chunk >= 0, f"--engine_chunk must be >= 0 (got {cfg.engine_chunk}; 0 = automatic)")
    _check(not (cfg.engine == "batched" and cfg.dp_level == "sample"),
           "--engine batched does not run --dp_level sample (its per-sample clipping comes from Opacus); "
           "use --engine loop")
    _check(not cfg.test or cfg.ckpt, "--test needs --ckpt PATH (a best.pt or last.pt of a run)")
    _check(not (cfg.resume and cfg.overwrite), "--resume and --overwrite exclude each other; pick one")
    _validate_privacy(cfg)
    _validate_local_dp(cfg)
    _validate_secure_agg(cfg)
    _validate_audit(cfg)
    _validate_client_algo(cfg)


def _validate_privacy(cfg: Config) -> None:
    _check(cfg.subclient_split == "hash" or cfg.dp_level == "none",
           f"--subclient_split paper re-draws which records form a sub-client, which the per-record and "
           f"per-sub-client accounting of --dp_level {cfg.dp_level} assumes fixed; use --subclient_split hash")
    _check(not cfg.balance_split or cfg.dp_level == "none",
           f"--balance_split hands a sub-client from one hospital to another when a record is added, re-splitting "
           f"both, which the per-record and per-sub-client accounting of --dp_level {cfg.dp_level} assumes fixed; "
           f"drop --balance_split")
    _check(cfg.max_vn >= 0, f"--max_vn must be >= 1, or 0 for the smallest hospital's size // --batch "
                            f"(got {cfg.max_vn})")
    _check(not cfg.max_vn or cfg.adaptive_subclients, "--max_vn caps the v that --ada_vn/--init_vn choose; add one "
                                                      "of those or drop --max_vn")
    dp_only = [f for f in ("adaclip", "noclip", "strict_dp", "ada_vn", "init_vn", "ada_stable", "ada_prog")
               if getattr(cfg, f)]
    if cfg.noise_multiplier is not None or cfg.epsilon is not None:
        dp_only.append("noise_multiplier/--epsilon")
    if not cfg.private:
        _check(not dp_only, f"--{dp_only[0] if dp_only else ''} needs a private --mode ({', '.join(PRIVATE_MODES)})")
        return
    _check_delta("--delta", cfg.delta)
    _check(cfg.S > 0, f"--S must be > 0 (got {cfg.S})")
    _check(cfg.epsilon is None or cfg.epsilon > 0, f"--epsilon must be > 0 (got {cfg.epsilon})")
    _check(cfg.noise_multiplier is None or cfg.noise_multiplier >= 0,
           f"--noise_multiplier must be >= 0 (got {cfg.noise_multiplier})")
    if cfg.dp_mode == "overhead":
        _check((cfg.noise_multiplier is None) != (cfg.epsilon is None),
               f"--mode {cfg.mode} needs exactly one of --noise_multiplier z or --epsilon E "
               "(with --dp_mode bounded, give both)")
    else:
        _check(cfg.noise_multiplier is not None and cfg.epsilon is not None,
               "--dp_mode bounded needs both --noise_multiplier and --epsilon (the budget)")
    _check(not (cfg.adaclip and cfg.noclip), "--adaclip and --noclip exclude each other")
    _check(not (cfg.strict_dp and cfg.noclip), "--strict_dp cannot be combined with --noclip (no finite guarantee)")
    _check(not (cfg.strict_dp and cfg.early),
           "--strict_dp cannot be combined with --early (it would stop on the hospitals' unnoised val scores)")
    _check(not (cfg.noclip and cfg.dp_mode == "bounded"), "--dp_mode bounded needs clipping; drop --noclip")
    _check(not (cfg.noclip and cfg.noise_multiplier is None),
           "--epsilon cannot be met with --noclip: unclipped updates have no finite epsilon at any noise level; "
           "drop --noclip, or give --noise_multiplier")
    _check(not (cfg.ada_vn and cfg.init_vn), "--ada_vn and --init_vn exclude each other; pick one")
    _check(not (cfg.ada_stable and cfg.ada_prog), "--ada_stable and --ada_prog exclude each other; pick one")
    _check(not (cfg.ada_stable or cfg.ada_prog) or cfg.adaptive_subclients,
           "--ada_stable/--ada_prog choose a variant of --ada_vn or --init_vn; add one of those")
    # The noise std must not depend on who was sampled (a fixed denominator everywhere).
    _check(not (cfg.weighted_avg and cfg.sample_rate < 1),
           "--weighted_avg with -sr < 1 under client-level DP: the weights n_k / sum n would depend on which "
           "hospitals were sampled, and so would the noise scale; drop --weighted_avg or use -sr 1")
    _check(not (cfg.mode == "dpnova" and cfg.sample_rate < 1),
           "--mode dpnova with -sr < 1: the server scales the noisy mean by tau_eff, a sum over the sampled "
           "sub-clients, so the noise scale would depend on who was sampled; use -sr 1 or another --mode")
    _check(0 < cfg.clip_quantile < 1, f"--clip_quantile must be in (0, 1) (got {cfg.clip_quantile})")
    _check(cfg.clip_count_noise > 0 and cfg.norm_sum_noise > 0, "--clip_count_noise and --norm_sum_noise must be > 0")


def _validate_local_dp(cfg: Config) -> None:
    if cfg.dp_level == "sample":
        _check((cfg.sample_noise is None) != (cfg.sample_epsilon is None),
               "--dp_level sample needs exactly one of --sample_noise z or --sample_epsilon E")
        _check(cfg.max_grad_norm > 0, f"--max_grad_norm must be > 0 (got {cfg.max_grad_norm})")
        _check_delta("--sample_delta", cfg.sample_delta)
        _check(cfg.physical_batch >= 0, f"--physical_batch must be >= 0 (got {cfg.physical_batch})")
        _check(cfg.sample_epsilon is None or not cfg.adaptive_subclients,
               "--sample_epsilon with --ada_vn/--init_vn: the rule may split hospitals into smaller sub-clients "
               "(a larger sampling rate) than the calibration assumed; give --sample_noise instead")
    elif cfg.dp_level == "update_local":
        _check((cfg.local_noise is None) != (cfg.local_epsilon is None),
               "--dp_level update_local needs exactly one of --local_noise z or --local_epsilon E")
        _check(cfg.local_clip > 0, f"--local_clip must be > 0 (got {cfg.local_clip})")
        _check_delta("--local_delta", cfg.local_delta)
    for flag in ("sample_noise", "sample_epsilon", "local_noise", "local_epsilon"):
        value = getattr(cfg, flag)
        _check(value is None or value > 0, f"--{flag} must be > 0 (got {value})")
    sample_flags = [f for f in ("sample_noise", "sample_epsilon") if getattr(cfg, f) is not None]
    local_flags = [f for f in ("local_noise", "local_epsilon") if getattr(cfg, f) is not None]
    _check(cfg.dp_level == "sample" or not sample_flags, f"--{sample_flags[0] if sample_flags else ''} needs --dp_level sample")
    _check(cfg.dp_level == "update_local" or not local_flags,
           f"--{local_flags[0] if local_flags else ''} needs --dp_level update_local")


def parse_drops(text: str) -> dict[str, tuple[int, ...]]:
    """--secagg_drops 'mask:0,3;unmask:5' -> {"mask": (0, 3), "unmask": (5,)}."""
    drops = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        stage, _, inputs = part.partition(":")
        _check(stage.strip() in SECAGG_STAGES and inputs.strip() != "",
               f"--secagg_drops {text!r}: {part!r} is not STAGE:i,j with STAGE one of {', '.join(SECAGG_STAGES)}")
        try:
            drops[stage.strip()] = tuple(sorted({int(i) for i in inputs.split(",")}))
        except ValueError:
            raise ConfigError(f"--secagg_drops {text!r}: {inputs!r} is not a list of input positions") from None
        _check(min(drops[stage.strip()]) >= 0, f"--secagg_drops {text!r}: input positions start at 0")
    return drops


def _validate_secure_agg(cfg: Config) -> None:
    flags = [f for f in ("secagg_neighbours", "secagg_threshold", "dropout_rate", "secagg_drops", "secagg_bits")
             if getattr(cfg, f) != getattr(Config, f)]
    _check(cfg.secure_agg == "secagg+" or not flags, f"--{flags[0] if flags else ''} needs --secure_agg secagg+")
    if cfg.secure_agg in ("ckks", "cyclic"):
        _validate_noise_at_clients(cfg)
        _check(not cfg.adaclip, f"--secure_agg {cfg.secure_agg} with --adaclip is not served: the hospitals would "
                                "decrypt the clip count before its noise is added; use a fixed --S")
        _check(cfg.noise_at == "server" or cfg.sample_rate == 1,
               f"--noise_at clients with --secure_agg {cfg.secure_agg} needs -sr 1: the shares are sized for every "
               "input in every sum, and a sampled round would release less noise than planned")
        _check(not cfg.private or cfg.strict_dp,
               f"--secure_agg {cfg.secure_agg} with --mode {cfg.mode} needs --strict_dp: the paper's faithful mode "
               "reads every sub-client's update norm, which encryption hides from the server")
        inputs = cfg.clients * cfg.virtual_clients + cfg.audit_subclients
        _check(cfg.secure_agg != "cyclic" or inputs >= 3,
               f"--secure_agg cyclic needs at least 3 inputs a round (got -N {cfg.clients} x -VN "
               f"{cfg.virtual_clients}): with 2 the initiator reads the other's update as the sum minus its own; "
               "use --secure_agg ckks")
        _check(cfg.sample_rate == 1 or cfg.secure_agg != "cyclic",
               "--secure_agg cyclic runs its ring over every input; a sampled round could hold fewer than 3: use -sr 1")
        return
    _validate_noise_at_clients(cfg)
    if cfg.noise_at == "clients":
        _check(cfg.accountant == "rdp", f"--noise_at clients is accounted by RDP (the Skellam bound); PLD and PRV have "
                                        f"no analysis of it: use --accountant rdp (got {cfg.accountant})")
        _check(not cfg.secure_rng, "--noise_at clients with --secure_rng is not served: the Skellam shares come from "
                                   "the seeded generators for now")
    if cfg.secure_agg == "none":
        return
    # the sub-clients that send in a round of every hospital, and the audit's canaries
    inputs = cfg.clients * cfg.virtual_clients + cfg.audit_subclients
    _check(cfg.secagg_neighbours >= 0 and cfg.secagg_neighbours % 2 == 0,
           f"--secagg_neighbours must be an even number >= 0 (got {cfg.secagg_neighbours}): each sub-client masks "
           "with k/2 on either side of a ring; 0 = every other sub-client")
    _check(cfg.secagg_neighbours < inputs,
           f"--secagg_neighbours {cfg.secagg_neighbours} is larger than the federation: {inputs} sub-clients send "
           f"each round (-N {cfg.clients} x -VN {cfg.virtual_clients}); use at most {inputs - 1} or 0 (every other one)")
    holders = (cfg.secagg_neighbours or inputs - 1) + 1
    _check(0 <= cfg.secagg_threshold <= holders,
           f"--secagg_threshold {cfg.secagg_threshold} is above the {holders} holders of each input's shares "
           f"({inputs} sub-clients send each round); use at most {holders}, or 0 for a majority plus one")
    _check(cfg.secagg_threshold != 1, "--secagg_threshold 1 lets the server rebuild every secret from one share; "
                                      "use 2 or more, or 0 for a majority plus one")
    need = math.ceil(math.log2(max(inputs, 2))) + 8
    _check(need <= cfg.secagg_bits <= 64,
           f"--secagg_bits {cfg.secagg_bits}: the ring must hold the sum of {inputs} inputs with 8 bits of "
           f"resolution each, so at least {need}, and at most 64")
    _check(0 <= cfg.dropout_rate < 1, f"--dropout_rate must be in [0, 1) (got {cfg.dropout_rate})")
    parse_drops(cfg.secagg_drops)
    _check(cfg.dp_level == "none",
           f"--secure_agg {cfg.secure_agg} with --dp_level {cfg.dp_level} is not served: the ring needs a public bound "
           "on each update, which local noise does not have; use client-level DP (a private --mode with --strict_dp)")
    _check(not cfg.private or cfg.strict_dp,
           f"--secure_agg {cfg.secure_agg} with --mode {cfg.mode} needs --strict_dp: the paper's faithful mode reads "
           "every sub-client's update norm, which secure aggregation hides from the server")


def _validate_noise_at_clients(cfg: Config) -> None:
    """What the noise shares of --noise_at clients need, under SecAgg+ or encryption."""
    _check(cfg.noise_at == "server" or (cfg.secure_agg != "none" and cfg.private and cfg.strict_dp),
           "--noise_at clients needs --secure_agg (secagg+, ckks or cyclic) and client-level DP with --strict_dp (a "
           "private --mode): the shares add up to the noise only inside the secure sum")
    if cfg.noise_at != "clients":
        return
    _check(cfg.noise_multiplier is not None,
           "--noise_at clients takes --noise_multiplier z (the equivalent central noise); calibrating z for "
           "--epsilon is not built for it yet. Run it with z and read its epsilon, or use --noise_at server")
    for flag, why in (("adaclip", "the adaptive clip's count would need its own share of noise; use a fixed --S"),
                      ("balance_split", "its re-allocation across hospitals is not analysed for the shares"),
                      ("weighted_avg", "the shares are sized for equal weights")):
        _check(not getattr(cfg, flag), f"--noise_at clients with --{flag} is not served: {why}")


def _validate_client_algo(cfg: Config) -> None:
    _check(cfg.personalize_steps >= 0, f"--personalize_steps must be >= 0 (got {cfg.personalize_steps})")
    if cfg.personalize_steps:
        _check(not cfg.merge, "--personalize_steps scores each hospital's own model on its own splits; drop --merge")
        _check(cfg.dp_level != "sample", "--personalize_steps with --dp_level sample is not built (the adaptation "
                                         "would run through Opacus's per-sample hooks)")
        _check(cfg.alpha > 0, f"--alpha must be > 0 (got {cfg.alpha})")
    if cfg.client_algo == "sgd":
        return
    for flag in ("alpha", "beta", "hf_delta"):
        _check(getattr(cfg, flag) > 0, f"--{flag} must be > 0 (got {getattr(cfg, flag)})")
    _check(cfg.dp_level != "sample", f"--client_algo {cfg.client_algo} with --dp_level sample is not built: DP-SGD "
                                     "would have to clip Per-FedAvg's per-sample meta-gradients; use client-level or "
                                     "local update DP")
    _check(cfg.engine != "batched", f"--client_algo {cfg.client_algo} runs on --engine loop (its steps take two or "
                                    "three batches each); drop --engine batched")


def _validate_audit(cfg: Config) -> None:
    if cfg.audit_canaries == 0 and cfg.audit_unit == "subclient":
        return
    _check(cfg.audit_canaries >= 2, f"--audit_canaries must be 0 (no audit) or at least 2 (got {cfg.audit_canaries})")
    _check(cfg.audit_unit in AUDIT_UNITS, f"--audit_unit must be one of {', '.join(AUDIT_UNITS)}")
    _check(cfg.private or cfg.dp_level == "update_local",
           "--audit_canaries audits a clipped and noised release: use a private --mode (client-level DP) or "
           "--dp_level update_local; sample-level DP-SGD protects records, which canary updates are not")
    for flag, why in (("adaclip", "the canaries would move the clip bound; audit a fixed --S"),
                      ("noclip", "without a clip there is no bound for the canaries to reach"),
                      ("ada_vn", "the rule reads the canaries' norms; audit a fixed -VN"),
                      ("init_vn", "the rule reads the canaries' norms; audit a fixed -VN"),
                      ("weighted_avg", "canaries hold no records to weigh"),
                      ("balance_split", "a canary hospital must have the v sub-clients every hospital has")):
        _check(not getattr(cfg, flag), f"--audit_canaries with --{flag} is not served: {why}")


def given_flags(argv: list[str] | None = None) -> set[str]:
    """The Config fields set on the command line (as opposed to defaults and presets)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def _paper_scale_check(parser: argparse.ArgumentParser, args: dict) -> None:
    if args["data"] not in PAPER_PRESETS and args["data"] not in PAPER_SPLIT_DATA:
        parser.error(f"--scale paper is defined for {', '.join(PAPER_PRESETS)} (the real RSNA-ICH and prostate "
                     f"presets are the paper's already), not --data {args['data']}; drop --scale paper")
    fixed = [f"--{k}" for k in ("train_size", "val_size", "test_size", "size_skew") if args[k]]
    if fixed and args["data"] in PAPER_PRESETS:
        parser.error(f"--scale paper fixes the hospital sizes (the paper's / {PAPER_SIZE_DIVISOR}); drop {fixed[0]} "
                     "or --scale paper")
    sites = PAPER_SITES.get(args["data"], 0)
    if sites and args["clients"] is not None and args["clients"] > sites:
        parser.error(f"--scale paper on {args['data']} has at most {sites} hospitals (-N {args['clients']})")


def parse_config(argv: list[str] | None = None) -> Config:
    """Parse flags, fill preset defaults, validate. Exits with a usage error on bad input."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    if args["data"] not in PRESETS:
        parser.error(f"--data {args['data']!r} is unknown; choose one of: {', '.join(DATASETS)}")
    paper_scale = args["scale"] == "paper"
    if paper_scale:
        _paper_scale_check(parser, args)
    preset = PAPER_PRESETS.get(args["data"], PRESETS[args["data"]]) if paper_scale else PRESETS[args["data"]]
    for key in PRESET_KEYS:
        if args[key] is None:
            args[key] = preset[key]
    paper_like = paper_scale or args["data"] in PAPER_SPLIT_DATA
    if args["select_metric"] is None:
        args["select_metric"] = PAPER_SELECTION.get("RSNA-ICH" if args["data"] == "synthetic-ich" and paper_scale
                                                    else args["data"], "")
    if args["subclient_split"] is None:
        args["subclient_split"] = "paper" if paper_like else "hash"
    if args["debug"] and args["data"] in SYNTHETIC:  # four batches per hospital, as the paper's --debug
        args["train_size"] = min(args["train_size"], 4 * args["batch"])
        args["val_size"] = min(args["val_size"], 2 * args["batch"])
        args["test_size"] = min(args["test_size"], 2 * args["batch"])
    cfg = Config.from_dict(args)
    try:
        validate(cfg)
    except ConfigError as err:
        parser.error(str(err))
    return cfg
