"""Real on-disk formats, written tiny by the tests: loaders, two-round federations, errors."""
import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import fed_train
from datasets import prostate, rsna_ich
from datasets.imageio import DataError
from datasets.transforms import ImagePreparation
from nets import build_model
from tests.test_loop import _run

RNG = np.random.default_rng(0)
QUICK = ["--rounds", "2", "--img_size", "32", "--batch", "4", "--no_progress"]


def _png(path, size=(20, 20), mode="RGB", value=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    arr = RNG.integers(0, 256, shape, dtype=np.uint8) if value is None else np.full(shape, value, np.uint8)
    Image.fromarray(arr, mode).save(path)


@pytest.fixture
def rsna(tmp_path):
    images, splits = tmp_path / "png", tmp_path / "splits"
    splits.mkdir()
    for name, n in (("train.csv", 16), ("validate.csv", 8), ("test.csv", 8)):
        with open(splits / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(rsna_ich.COLUMNS)
            for i in range(n):
                image_id = f"ID_{name[:2]}{i:04d}.png"
                _png(images / image_id)
                healthy = i % 2
                w.writerow([image_id, 1 - healthy, 0, 0, 0, 0, healthy])
    return ["--data", "RSNA-ICH", "--image_dir", str(images), "--split_dir", str(splits), "-N", "2",
            "--model", "cnn", "--save_path", str(tmp_path / "runs")] + QUICK


@pytest.fixture
def prostate_root(tmp_path):
    root = tmp_path / "prostate"
    for site in prostate.SITES:
        folder = "PROSTATEx" if site == "ProstateX" else site  # the usual preprocessing's spelling
        for case in range(3):
            for s in range(2):
                _png(root / folder / "Image" / f"case{case}" / f"{s}.png", size=(24, 24))
                mask = np.zeros((24, 24), np.uint8)
                mask[6:18, 5:17] = 255
                (root / folder / "Mask" / f"case{case}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask, "L").save(root / folder / "Mask" / f"case{case}" / f"{s}.png")
    return root


def _prostate_args(tmp_path, root, split_dir):
    return ["--data", "prostate", "--data_root", str(root), "--split_dir", str(split_dir), "-N", "2",
            "--model", "unet_small", "--save_path", str(tmp_path / "runs")] + QUICK[:-3] + ["--batch", "2",
                                                                                              "--no_progress"]


def test_rsna_two_round_federation(rsna):
    s = _run(rsna)["summary"]
    assert set(s["test"]) == {"auc", "acc", "sen", "spe", "f1"} and len(s["test_per_hospital"]) == 2


def test_rsna_label_is_the_healthy_column(rsna):
    from federated.config import parse_config
    from datasets import build_federated_data
    data = build_federated_data(parse_config(rsna), torch.Generator().manual_seed(0))
    assert data.in_channels == 3 and sum(len(h.train) for h in data.hospitals) == 16
    assert sorted(torch.cat([h.train.targets for h in data.hospitals]).tolist()) == [0] * 8 + [1] * 8


def test_rsna_split_files_saved_with_a_byte_order_mark_load(rsna, tmp_path):
    """Spreadsheet programs save CSVs with a UTF-8 BOM; the first column keeps its name."""
    from federated.config import parse_config
    from datasets import build_federated_data
    for name in ("train.csv", "validate.csv", "test.csv"):
        path = tmp_path / "splits" / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    data = build_federated_data(parse_config(rsna), torch.Generator().manual_seed(0))
    assert sum(len(h.train) for h in data.hospitals) == 16


def test_rsna_split_files_sharing_images_are_warned_of(rsna, tmp_path, capsys):
    splits = tmp_path / "splits"
    (splits / "test.csv").write_text((splits / "validate.csv").read_text())  # test = validation
    from federated.config import parse_config
    from datasets import build_federated_data
    build_federated_data(parse_config(rsna), torch.Generator().manual_seed(0))
    err = capsys.readouterr().err
    assert f"warning: {splits / 'validate.csv'} and {splits / 'test.csv'} share 8 image(s), e.g. ID_va0000.png" in err
    assert "train.csv" not in err


@pytest.mark.parametrize("breakage, expected", [
    ("no_image_dir", "--image_dir"),
    ("no_split_file", "test.csv is missing"),
    ("missing_image", "missing from"),
    ("unreadable_image", "cannot be read"),
    ("bad_label", "labels must be 0 or 1"),
    ("missing_column", "lacks the column(s) healthy"),
    ("escaping_id", "line 2: ImageID '../ID_tr0000.png' is not a file name"),
])
def test_rsna_bad_input(rsna, breakage, expected, capsys, tmp_path):
    args = list(rsna)
    images, splits = tmp_path / "png", tmp_path / "splits"
    if breakage == "no_image_dir":
        args[args.index("--image_dir") + 1] = str(tmp_path / "nowhere")
    elif breakage == "no_split_file":
        (splits / "test.csv").unlink()
    elif breakage == "missing_image":
        next(images.glob("ID_tr*.png")).unlink()
    elif breakage == "unreadable_image":
        next(images.glob("ID_te*.png")).write_bytes(b"not a png")
    elif breakage == "escaping_id":
        text = (splits / "train.csv").read_text()
        (splits / "train.csv").write_text(text.replace("ID_tr0000.png", "../ID_tr0000.png", 1))
    elif breakage in ("bad_label", "missing_column"):
        text = (splits / "train.csv").read_text().splitlines()
        if breakage == "bad_label":
            text[1] = text[1][:-1] + "2"
        else:
            text = [line.rsplit(",", 1)[0] for line in text]
        (splits / "train.csv").write_text("\n".join(text) + "\n")
    assert fed_train.main(args) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_rsna_split_files_from_kaggle_labels(tmp_path):
    labels = tmp_path / "stage_2_train.csv"
    rows = ["ID,Label"]
    for i in range(40):
        any_ = int(i < 15)
        for sub in rsna_ich.SUBTYPES + ["any"]:
            rows.append(f"ID_{i:05x}_{sub},{any_ if sub in ('any', 'subdural') else 0}")
    labels.write_text("\n".join(rows) + "\n")
    counts = rsna_ich.build_split_files(labels, tmp_path / "out", size=20, seed=0)
    assert counts == {"train": 12, "val": 4, "test": 4}
    rows = [r for name in ("train.csv", "validate.csv", "test.csv")
            for r in csv.DictReader(open(tmp_path / "out" / name))]
    assert sum(int(r["healthy"]) for r in rows) == 10  # balanced
    assert len({r["ImageID"] for r in rows}) == 20
    with pytest.raises(DataError, match="needs 20 haemorrhage and 20 healthy images; .* has 15 and 25"):
        rsna_ich.build_split_files(labels, tmp_path / "o2", size=40, seed=0)


def test_prostate_case_level_json_and_federation(tmp_path, prostate_root, capsys):
    counts = prostate.build_split_json(prostate_root, tmp_path / "json", seed=0)
    assert counts["I2CVB"] == {"training": 2, "validation": 2, "testing": 2}
    spec = json.loads((tmp_path / "json" / "MSD.json").read_text())
    cases = {k: {e["image"].split("/")[2] for e in v} for k, v in spec.items()}
    assert not (cases["training"] & cases["testing"]) and not (cases["training"] & cases["validation"])
    assert "PROSTATEx" in capsys.readouterr().err  # the alternative spelling is reported
    s = _run(_prostate_args(tmp_path, prostate_root, tmp_path / "json"))["summary"]
    assert set(s["test"]) == {"dice", "iou", "hd95", "dice_hard"} and len(s["test_per_hospital"]) == 2


@pytest.mark.parametrize("breakage, expected", [
    ("outside_root", "points outside --data_root"),
    ("size_mismatch", "they must be the same size"),
    ("empty_site", "is empty"),
    ("missing_json", "NCI_ISBI_3T.json is missing"),
    ("no_root", "--data_root"),
    ("number_entry", "MSD.json: 'training' entry 7 must be an object with 'image' and 'label' paths"),
    ("split_not_a_list", "MSD.json: 'testing' must be a list of entries"),
    ("path_not_text", "MSD.json: 'training' entry {'image': 3, 'label': 'x.png'} must be an object with 'image' "
                      "and 'label' paths"),
])
def test_prostate_bad_input(tmp_path, prostate_root, breakage, expected, capsys):
    json_dir = tmp_path / "json"
    prostate.build_split_json(prostate_root, json_dir, seed=0)
    args = _prostate_args(tmp_path, prostate_root, json_dir)
    spec_path = json_dir / "MSD.json"
    spec = json.loads(spec_path.read_text())
    if breakage == "outside_root":
        spec["testing"][0]["image"] = "../elsewhere.png"
    elif breakage == "size_mismatch":
        _png(prostate_root / spec["training"][0]["label"], size=(30, 30), mode="L", value=0)
    elif breakage == "empty_site":
        spec["validation"] = []
    elif breakage == "missing_json":
        (json_dir / "NCI_ISBI_3T.json").unlink()
    elif breakage == "no_root":
        args[args.index("--data_root") + 1] = str(tmp_path / "nowhere")
    elif breakage == "number_entry":
        spec["training"][0] = 7
    elif breakage == "split_not_a_list":
        spec["testing"] = 5
    elif breakage == "path_not_text":
        spec["training"][0] = {"image": 3, "label": "x.png"}
    spec_path.write_text(json.dumps(spec))
    assert fed_train.main(args) == 2
    assert expected in capsys.readouterr().err


def _npz(path, n=(60, 20, 20), labels_max=8, rgb=True):
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, 28, 28, 3) if rgb else (count, 28, 28)
        arrays[f"{split}_images"] = RNG.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % labels_max).reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)


def test_bloodmnist_dirichlet_federation(tmp_path):
    _npz(tmp_path / "bloodmnist.npz")
    out = _run(["--data", "bloodmnist", "--data_root", str(tmp_path), "-N", "2", "--dirichlet_alpha", "50",
                "--rounds", "2", "--no_progress", "--save_path", str(tmp_path / "runs")])
    assert set(out["summary"]["test"]) == {"acc", "auc", "f1"}


def test_dirichlet_skews_labels_and_quantity_skews_sizes():
    from datasets.medmnist import hospital_proportions, partition
    labels = torch.arange(800) % 8
    gen = np.random.default_rng(0)
    parts = partition(labels, hospital_proportions("dirichlet", 4, 8, 0.1, gen), gen)
    assert sorted(torch.cat(parts).tolist()) == list(range(800))  # each sample once
    fractions = np.array([[float((labels[p] == c).float().mean()) for c in range(8)] for p in parts])
    assert fractions.max() > 0.4  # a hospital dominated by few classes
    iid = partition(labels, hospital_proportions("iid", 4, 8, 0.1, gen), gen)
    assert [len(p) for p in iid] == [200] * 4
    quantity = partition(labels, hospital_proportions("quantity", 4, 8, 0.5, gen), gen)
    sizes = [len(p) for p in quantity]
    assert max(sizes) > 2 * min(sizes)  # unequal hospitals...
    big = max(quantity, key=len)
    assert (torch.bincount(labels[big], minlength=8).float() / len(big)).max() < 0.2  # ...with mixed labels


def test_medmnist_bad_labels_and_sizes(tmp_path, capsys):
    _npz(tmp_path / "bloodmnist.npz", labels_max=10)
    args = ["--data", "bloodmnist", "--data_root", str(tmp_path), "-N", "2", "--no_progress",
            "--save_path", str(tmp_path / "runs")]
    assert fed_train.main(args) == 2
    assert "outside 0..7" in capsys.readouterr().err
    assert fed_train.main(args + ["--img_size", "32"]) == 2
    assert "MedMNIST comes in" in capsys.readouterr().err


def test_folder_classification_and_segmentation(tmp_path):
    cls = tmp_path / "cls"
    for site in ("siteA", "siteB"):
        for c in ("benign", "malignant", "normal"):
            for i in range(3):
                _png(cls / site / c / f"{i}.png")
    out = _run(["--data", "folder", "--data_root", str(cls), "-N", "2", "--save_path", str(tmp_path / "r")] + QUICK)
    assert set(out["summary"]["test"]) == {"acc", "auc", "f1"}  # three classes
    seg = tmp_path / "seg"
    for site in ("siteA", "siteB"):
        for i in range(6):
            _png(seg / site / "images" / f"{i}.png")
            _png(seg / site / "masks" / f"{i}.png", mode="L", value=255 * (i % 2))
    out = _run(["--data", "folder", "--data_root", str(seg), "-N", "2", "--save_path", str(tmp_path / "s")] + QUICK)
    assert set(out["summary"]["test"]) == {"dice", "iou", "hd95", "dice_hard"}


def test_folder_classes_spelled_in_two_cases_are_refused(tmp_path, capsys):
    """'Normal' at one site and 'normal' at another are one class, not two."""
    for site, spelling in (("siteA", "Normal"), ("siteB", "normal")):
        for c in (spelling, "tumour"):
            for i in range(3):
                _png(tmp_path / "d" / site / c / f"{i}.png")
    assert fed_train.main(["--data", "folder", "--data_root", str(tmp_path / "d"), "-N", "2",
                           "--save_path", str(tmp_path / "r")] + QUICK) == 2
    err = capsys.readouterr().err
    assert "class folders 'Normal' and 'normal' differ only in case; rename them to one spelling" in err, err
    assert not (tmp_path / "r").exists()


def test_folder_empty_site_is_named(tmp_path, capsys):
    for i in range(3):
        _png(tmp_path / "d" / "siteA" / "yes" / f"{i}.png")
        _png(tmp_path / "d" / "siteA" / "no" / f"{i}.png")
    (tmp_path / "d" / "siteB" / "yes").mkdir(parents=True)
    assert fed_train.main(["--data", "folder", "--data_root", str(tmp_path / "d"), "-N", "2",
                           "--save_path", str(tmp_path / "r")] + QUICK) == 2
    assert "siteB has no images" in capsys.readouterr().err


def test_augmentation_is_seeded_and_only_in_training():
    prep = ImagePreparation(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), augment=True)
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    a = prep(x, train=True, gen=torch.Generator().manual_seed(1))
    b = prep(x, train=True, gen=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    plain = prep(x, train=False)
    assert torch.allclose(plain, (x.float() / 255 - 0.5) / 0.5) and not torch.allclose(a, plain)


@pytest.mark.skipif(os.environ.get("SKIP_BIG_MODELS") == "1", reason="SKIP_BIG_MODELS=1 set by the user")
@pytest.mark.parametrize("name, shape, outputs", [("densenet121", (2, 3, 224, 224), 2), ("unet", (1, 3, 256, 256), 1)])
def test_paper_models_forward_and_backward(name, shape, outputs):
    model = build_model(name, 3, outputs)
    assert not [n for n, b in model.named_buffers() if b.is_floating_point()]  # no running statistics
    y = model(torch.randn(shape))
    assert y.shape == ((shape[0], outputs) if name == "densenet121" else (shape[0], outputs, *shape[2:]))
    y.float().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_ich_augmentation_is_the_papers_nearest_black_fill_before_normalisation():
    """The paper augments the PIL image (RandomAffine: nearest, fill 0, whole-pixel shifts;
    then a flip) before ToTensor and Normalize: rotated-in corners are black, not the mean,
    and every pixel is one of the input's values (no interpolation)."""
    from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, ImagePreparation
    prep = ImagePreparation(IMAGENET_MEAN, IMAGENET_STD, augment=True)
    white = torch.full((16, 3, 32, 32), 255, dtype=torch.uint8)
    out = prep(white, train=True, gen=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    black, bright = (0 - mean) / std, (1 - mean) / std
    is_black, is_bright = torch.isclose(out, black), torch.isclose(out, bright)
    assert bool((is_black | is_bright).all())  # nearest: no value between black and white
    assert int(is_black[:, 0].sum()) > 0  # some rotation or shift brought in the black fill
    assert torch.equal(prep(white, train=False), bright.expand(16, 3, 32, 32))  # evaluation: no augmentation


def test_prostate_slices_are_area_resized_with_fractional_masks(tmp_path):
    """The paper resizes image and mask with MONAI's default (area) and keeps the mask's
    fractions; its metrics threshold them (IoU: truncation to 1, HD95: > 0)."""
    from PIL import Image
    from datasets.imageio import load_images
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[0, 0] = 255  # one pixel of the top-left 2x2 block
    mask[2:, 2:] = 255  # the whole bottom-right block
    Image.fromarray(mask).save(tmp_path / "m.png")
    small = load_images([tmp_path / "m.png"], size=2, mode="L", resample="area")[0, 0].float() / 255
    assert small.tolist() == [[pytest.approx(0.25, abs=0.01), 0.0], [0.0, 1.0]]
    nearest = load_images([tmp_path / "m.png"], size=2, mode="L", resample="nearest")[0, 0]
    assert set(nearest.flatten().tolist()) <= {0, 255}


CXR_COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "Atelectasis", "Cardiomegaly", "Consolidation",
               "Edema", "Pleural Effusion"]


@pytest.fixture
def chest_xray(tmp_path):
    """CheXpert-style tables: a lateral view to skip, uncertain and blank labels, every age
    group and one patient of unknown sex."""
    root, tables = tmp_path / "cxr", tmp_path / "tables"
    tables.mkdir()
    ages = [20, 29, 30, 59, 60, 69, 70, 79, 80, 95]
    for name, n in (("train.csv", 12), ("valid.csv", 10), ("test.csv", 10)):
        with open(tables / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CXR_COLUMNS)
            for i in range(n):
                path = f"{name[:-4]}/patient{i:03d}/study1/view1_frontal.png"
                _png(root / path, size=(24, 20), mode="L")
                labels = [i % 2, (i + 1) % 2, "-1.0" if i == 0 else "", "0.0", "-1" if i == 1 else i % 2]
                sex = "Unknown" if i == 3 else ("Female" if i % 2 else "Male")
                w.writerow([path, sex, ages[i % len(ages)], "Frontal", "AP", *labels])
            lateral = f"{name[:-4]}/patient{n:03d}/study1/view2_lateral.png"
            w.writerow([lateral, "Male", 50, "Lateral", "", 1, 1, 1, 1, 1])  # not on disk: never read
    return ["--data", "chest-xray", "--image_dir", str(root), "--split_dir", str(tables), "-N", "1",
            "--model", "resnet9_small", "--save_path", str(tmp_path / "runs"), "--bootstrap", "20",
            "--rounds", "2", "--img_size", "16", "--batch", "4", "--no_progress"]


def test_chest_xray_tables_load_with_the_stated_policies(chest_xray):
    from datasets import build_federated_data
    from federated.config import parse_config
    data = build_federated_data(parse_config(chest_xray), torch.Generator().manual_seed(0))
    train, val = data.hospitals[0].train, data.hospitals[0].val
    assert train.images.shape == (12, 1, 16, 16) and train.images.dtype == torch.uint8  # lateral row skipped
    assert data.label_names == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    assert train.targets[0, 2] == 0 and train.targets[1, 4] == 0  # uncertain -> 0 (U-Zeros, the default)
    assert train.targets[2, 2] == 0 and train.targets[3, 4] == 1  # blank -> 0; 1 stays 1
    # the study's age groups: <30, 30-59, 60-69, 70-79, 80+
    assert val.attributes["age"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert val.attributes["sex"].tolist()[:4] == [0, 1, 0, -1]  # Unknown: in no sex group
    ones = build_federated_data(parse_config(chest_xray + ["--uncertain", "ones"]), torch.Generator().manual_seed(0))
    assert ones.hospitals[0].train.targets[0, 2] == 1 and ones.hospitals[0].train.targets[1, 4] == 1


def test_chest_xray_run_reports_fairness_by_sex_and_age(chest_xray):
    s = _run(chest_xray)["summary"]
    metrics = s["fairness"]["metrics"]
    assert {"spd_acc_sex=female", "acc_age=<30", "acc_age=80+", "auc_finding=Edema"} <= set(metrics)
    assert set(s["fairness"]["thresholds"]) == {"Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                                                "Pleural Effusion"}


@pytest.mark.parametrize("breakage, expected", [
    ("missing_column", "lacks the column(s) Age"),
    ("bad_age", "Age = 'forty' is not a number of years in 0-120"),
    ("age_out_of_range", "Age = '130' is not a number of years in 0-120"),
    ("unknown_path", "1 image(s) listed in"),
    ("bad_label", "Edema = '2'; labels must be 1, 0, -1 (uncertain) or blank"),
    ("no_table", "label table"),
    ("two_sites", "use -N 1"),
])
def test_chest_xray_bad_input(chest_xray, breakage, expected, capsys, tmp_path):
    args = list(chest_xray)
    table = tmp_path / "tables" / "train.csv"
    rows = list(csv.reader(table.read_text().splitlines()))
    if breakage == "missing_column":
        rows = [r[:2] + r[3:] for r in rows]
    elif breakage == "bad_age":
        rows[2][2] = "forty"
    elif breakage == "age_out_of_range":
        rows[2][2] = "130"
    elif breakage == "unknown_path":
        rows[3][0] = "train/nobody/view1_frontal.png"
    elif breakage == "bad_label":
        rows[1][8] = "2"
    elif breakage == "no_table":
        (tmp_path / "tables" / "test.csv").unlink()
    elif breakage == "two_sites":
        args[args.index("-N") + 1] = "2"
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    assert fed_train.main(args) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_run_cxr_exp_sh_takes_the_tables(chest_xray, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DATA": "real", "IMAGE_DIR": str(tmp_path / "cxr"), "SPLIT_DIR": str(tmp_path / "tables"),
           "SEEDS": "0", "EPSILONS": "10", "ROUNDS": "1", "MODEL": "resnet9_small", "IMG_SIZE": "16", "JOBS": "1",
           "PY": sys.executable, "SAVE": str(tmp_path / "sweep"), "UNCERTAIN": "ones"}
    done = subprocess.run(["bash", str(root / "run_cxr_exp.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    configs = [json.loads(p.read_text()) for p in (tmp_path / "sweep" / "chest-xray").rglob("config.json")]
    assert len(configs) == 2 and {c["uncertain"] for c in configs} == {"ones"}
    assert {c["local_opt"] for c in configs} == {"nadam"} and {c["img_size"] for c in configs} == {16}
    assert "SPD" in (tmp_path / "sweep" / "cxr.md").read_text()


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_16_bit_images_are_scaled_by_their_bit_depth(tmp_path, mode):
    """A 16-bit PNG (CT and MR exports often are) is scaled from 0..65535 to 0..255, not
    saturated at 255."""
    from datasets.imageio import load_image
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))
    path = tmp_path / "ct16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # what Pillow makes of a 16-bit PNG
    arr = load_image(path, size=32, mode=mode)
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    assert arr.shape == ((1 if mode == "L" else 3), 32, 32)
    assert all(np.array_equal(channel, expected) for channel in arr)


def test_prostate_masks_stored_as_0_and_1_read_as_0_and_255(tmp_path):
    """Masks saved with values 0/1 (instead of 0/255) are recognised by their range and give
    the same targets, not masks 255 times too faint."""
    from datasets.imageio import load_images
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[0, 0] = 1
    mask[2:, 2:] = 1
    Image.fromarray(mask).save(tmp_path / "unit.png")
    Image.fromarray(mask * 255).save(tmp_path / "byte.png")
    unit, byte = load_images([tmp_path / "unit.png", tmp_path / "byte.png"], size=2, mode="L", resample="area",
                             masks=True)
    assert torch.equal(unit, byte) and int(byte.max()) == 255
    image = load_images([tmp_path / "unit.png"], size=4, mode="L")  # an image keeps its values
    assert int(image.max()) == 1


def test_prostate_images_and_masks_swapped_are_warned_of(tmp_path, prostate_root, capsys):
    """A site JSON whose 'image' and 'label' are exchanged trains a model to predict the MRI
    from its mask; the files' value ranges show it, so the run says so."""
    json_dir = tmp_path / "json"
    prostate.build_split_json(prostate_root, json_dir, seed=0)
    spec_path = json_dir / "MSD.json"
    spec = json.loads(spec_path.read_text())
    spec["training"] = [{"image": e["label"], "label": e["image"]} for e in spec["training"]]
    spec_path.write_text(json.dumps(spec))
    capsys.readouterr()
    pairs = prostate.read_site(prostate_root, spec_path)
    err = capsys.readouterr().err
    assert f"warning: {spec_path}: the 'training' images look like masks (2 values) and the masks like images" in err
    assert len(pairs["train"]) == len(spec["training"])
    prostate.read_site(prostate_root, json_dir / "I2CVB.json")  # as built: no warning
    assert "warning" not in capsys.readouterr().err


def test_prostate_splits_sharing_slices_are_warned_of(tmp_path, prostate_root, capsys):
    json_dir = tmp_path / "json"
    prostate.build_split_json(prostate_root, json_dir, seed=0)
    spec_path = json_dir / "MSD.json"
    spec = json.loads(spec_path.read_text())
    spec["testing"] = spec["training"]  # test identical to train
    spec_path.write_text(json.dumps(spec))
    capsys.readouterr()
    prostate.read_site(prostate_root, spec_path)
    assert f"warning: {spec_path}: 'training' and 'testing' share {len(spec['training'])} slice(s)" in \
        capsys.readouterr().err


def test_the_pppml_tasks_run_on_their_public_layouts(tmp_path):
    """The chest-CT classification task in COVID-CT's layout (CT_COVID/ and CT_NonCOVID/ per
    site) and lung-infection masks exported as PNG slices (images/ and masks/ per site), run
    as PPPML-HMI runs them: Per-FedAvg, personalised scores, CKKS-encrypted sums, 3 sites."""
    ct = tmp_path / "covid_ct"
    seg = tmp_path / "covid_seg"
    for site in ("hospitalA", "hospitalB", "hospitalC"):
        for c in ("CT_COVID", "CT_NonCOVID"):
            for i in range(4):
                _png(ct / site / c / f"{c}_{i}.png")
        for i in range(6):
            _png(seg / site / "images" / f"slice_{i}.png")
            _png(seg / site / "masks" / f"slice_{i}.png", mode="L", value=255 * (i % 2))
    pppml = ["--client_algo", "perfedavg_fo", "--personalize_steps", "1", "--secure_agg", "ckks", "-N", "3"]
    out = _run(["--data", "folder", "--data_root", str(ct), "--save_path", str(tmp_path / "r")] + pppml + QUICK)
    assert set(out["summary"]["test_personal"]) == {"acc", "auc", "sen", "spe", "f1"}
    assert out["summary"]["encrypted_aggregation"]["rounds"] == 2
    out = _run(["--data", "folder", "--data_root", str(seg), "--model", "unet_small", "--save_path",
                str(tmp_path / "s")] + pppml + QUICK)
    assert set(out["summary"]["test_personal"]) == {"dice", "iou", "hd95", "dice_hard"}
