"""Federated training of hospitals and their sub-clients: flags -> Config -> run -> summary.

    python fed_train.py                         # default job on the embedded synthetic data
    python fed_train.py --data synthetic-prostate -VN 2 --rounds 50
    python fed_train.py --test --ckpt experiments/.../best.pt
"""
import sys

from federated.cli import main

if __name__ == "__main__":
    sys.exit(main())
