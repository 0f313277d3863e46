"""Federated training of hospitals and their sub-clients: flags -> Config -> run -> summary.

    python fed_train.py                         # FedAvg on the embedded synthetic data (quick CPU scale)
    python fed_train.py --scale paper --mode dpsgd --adaclip --ada_vn --noise_multiplier 1.0 --delta 0.01
                                                # the default job (scripts/run.sh): the paper's method
    python fed_train.py --data synthetic-prostate -VN 2 --rounds 50
    python fed_train.py --test --ckpt experiments/.../best.pt
"""
import sys

from federated.cli import main

if __name__ == "__main__":
    sys.exit(main())
