"""The names the flags accept, kept free of torch so that a mistyped flag is rejected before
torch and MONAI load (seconds). tests/test_flags.py checks them against the registries in
datasets/ and nets/, which stay the source of truth."""
SYNTHETIC = ("synthetic-ich", "synthetic-prostate", "synthetic-blood", "synthetic-cxr", "synthetic-chestct",
             "synthetic-covidseg")
SHIFTED = ("synthetic-chestct", "synthetic-covidseg")  # --site_shift dials their heterogeneity
MEDMNIST = ("bloodmnist", "pathmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist", "breastmnist",
            "organamnist", "organcmnist", "organsmnist", "tissuemnist")
DATASETS = SYNTHETIC + ("RSNA-ICH", "prostate", "chest-xray", "folder") + MEDMNIST
# --data chest-xray: the default --findings, CheXpert's five competition findings (Irvin et al., 2019)
CHEST_XRAY_FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
UNCERTAIN_POLICIES = ("zeros", "ones")
MODELS = ("densenet121", "unet", "dpresnet", "dpresnet_small", "resnet9", "resnet9_small", "cnn", "cnn_narrow", "unet_small",
          "lenet")
PARTITIONS = ("dirichlet", "quantity", "iid")
SAMPLING_MODES = ("fixed", "poisson")
ENGINES = ("loop", "batched")
METRIC_NAMES = ("auc", "acc", "sen", "spe", "f1", "dice", "iou", "hd95", "dice_hard")  # utils/metrics.py computes them
