"""End to end: the real pipeline with real DVC in a temporary git repository, on tiny settings."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ferpipe import dataset, models, results, training
from ferpipe.metrics import HEADLINE

from .conftest import ROOT

pytestmark = pytest.mark.slow

PROJECT_FILES = ["dvc.yaml", "params.yaml", "pyproject.toml", ".gitignore", ".dvcignore", "src", "stages",
                 "data/sample", ".dvc/config"]  # fmt: skip
TINY = {
    "balance": {"max_per_class": 24},
    "train": {"batch_size": 16, "threads": 1},
    "zoo": {
        "cnn": {"epochs": 1},
        "resnet": {"epochs": 1, "args": {"image_size": 32, "weights": "none"}},
        "seed004": {"epochs": 1},
        "seed001_m1": {"epochs": 3},
    },
}
SAMPLE = "data/sample/fer2013_sample.zip"
KEPT = {"train": 30, "PublicTest": 10, "PrivateTest": 10}  # per emotion: the copy's smaller sample


def kept(names: list[str]) -> list[str]:
    """The first KEPT names of each folder, emotion and test split: above balance's cap of 24,
    and every stage runs on a fifth of the images."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in sorted(names):
        folder, emotion, file = name.split("/")
        kind = file.split("_")[0] if folder == "test" else folder
        groups.setdefault((kind, emotion), []).append(name)
    return [n for (kind, _), group in groups.items() for n in group[: KEPT[kind]]]


SAMPLE_NAMES = kept(zipfile.ZipFile(ROOT / SAMPLE).namelist())
SAMPLE_IMAGES = len(SAMPLE_NAMES)
PER_SPLIT = sum(n.startswith("test/angry/PublicTest_") for n in SAMPLE_NAMES)  # per emotion
TEST = 4 * PER_SPLIT  # multiclass images in each of PublicTest and PrivateTest
MODEL_STAGES = ("init", "train", "crossval", "evaluate", "plot", "explain")
TRAINING = ("train", "crossval", "evaluate", "plot", "explain")  # what training settings re-run
DATA_STAGES = {"download", "validate", "balance", "denoise", "split"}
ALL_STAGES = DATA_STAGES | {f"{s}@{m}" for s in MODEL_STAGES for m in ("cnn", "resnet")}
RESULTS = ["metrics/data_quality.json"] + [
    f.format(m) for m in ("cnn", "resnet") for f in ("metrics/{}.json", "metrics/{}_detail.json",
                                                     "plots/{}/history.csv", "plots/{}/predictions.csv")
]  # fmt: skip


def stages_of(*entries: str, stages: tuple[str, ...] = MODEL_STAGES) -> set[str]:
    return {f"{s}@{e}" for s in stages for e in entries}


def run(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(cwd / "src"),  # the copy's own code, not the installed checkout's
    }
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and done.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def merge(tree: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict):
            merge(tree[key], value)
        else:
            tree[key] = value


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git + DVC repository holding the project, reproduced once on tiny settings."""
    root = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        elif src.exists():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    with zipfile.ZipFile(ROOT / SAMPLE) as full, zipfile.ZipFile(root / SAMPLE, "w") as small:
        for name in SAMPLE_NAMES:
            small.writestr(full.getinfo(name), full.read(name))
    params = yaml.safe_load((root / "params.yaml").read_text())
    merge(params, TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(root, "git", "init", "-q")
    run(root, "git", "config", "user.email", "test@example.com")
    run(root, "git", "config", "user.name", "test")
    first = run(root, "dvc", "repro")
    assert stages_run(first.stdout) == ALL_STAGES
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "baseline")
    return root


@pytest.fixture
def clean(project: Path):
    """Each test starts from the committed baseline and leaves it so."""
    yield project
    run(project, "git", "reset", "-q", "--hard")
    run(project, "dvc", "checkout", "-q", "--force")


def test_repro_writes_metrics_predictions_and_plots(project):
    for name in ("cnn", "resnet"):
        headline = json.loads((project / f"metrics/{name}.json").read_text())
        assert sorted(headline) == sorted(HEADLINE) and 0 <= headline["test_accuracy"] <= 1
        detail = json.loads((project / f"metrics/{name}_detail.json").read_text())
        assert detail["test_split"] == "PublicTest+PrivateTest"
        by_split = detail["splits"]
        metrics = by_split["PublicTest+PrivateTest"]
        assert {k: metrics[k] for k in HEADLINE} == headline
        for key in ("macro_precision", "macro_recall", "confusion_matrix", "per_class"):
            assert key in metrics, key
        assert sorted(metrics["per_class"]) == ["angry", "fear", "happy", "sad"]
        assert sum(map(sum, metrics["confusion_matrix"])) == metrics["test_images"] == 2 * TEST
        assert {k: v["test_images"] for k, v in by_split.items()} == {
            "PublicTest": TEST, "PrivateTest": TEST, "PublicTest+PrivateTest": 2 * TEST
        }  # fmt: skip
        training = json.loads((project / f"metrics/{name}_training.json").read_text())
        assert training["images_per_second"] > 0 and training["threads"] == 1
        assert 100 < training["peak_memory_mb"] < 4000
        assert training["channels_last"] is True and training["compiled"] is False
        assert training["versions"]["torch"]
        history = (project / f"plots/{name}/history.csv").read_text().splitlines()
        assert history[0] == "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr"
        assert len(history) == 2
        predictions = (project / f"plots/{name}/predictions.csv").read_text().splitlines()
        assert predictions[0].startswith("id,actual,predicted,p_angry")
        assert len(predictions) == 2 * TEST + 1
        assert json.loads((project / f"metrics/{name}_crossval.json").read_text()) == {}  # off
        for png in ("confusion.png", "curves.png", "augmented.png"):
            assert (project / f"plots/{name}/{png}").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((project / "metrics/resnet_detail.json").read_text())["weights"] == "none"
    assert json.loads((project / "metrics/resnet_training.json").read_text())["features_cached"]
    assert (project / "data/features/resnet/train.npy").is_file()
    quality = json.loads((project / "metrics/data_quality.json").read_text())
    assert quality["images"] == SAMPLE_IMAGES
    shown = json.loads(run(project, "dvc", "plots", "show", "--json").stdout)["data"]
    assert {
        f"plots/{m}/{f}" for m in ("cnn", "resnet")
        for f in ("history.csv", "predictions.csv", "confusion.png", "curves.png", "augmented.png",
                  "explain/saliency.png", "explain/activations.png", "explain/filters.png",
                  "explain/attention.png")
    } == set(shown)  # fmt: skip


def test_evaluate_of_a_frozen_trunk_gives_the_whole_networks_numbers(project):
    """evaluate@resnet runs only the head on the test features init cached."""
    assert (project / "data/features/resnet/test.npy").is_file()
    test = dataset.load(project / "data/split/test.npz")
    model, _ = models.load(project / "models/resnet.pt")
    whole = training.predict(model, torch.from_numpy(test.pixels), 16, torch.device("cpu"))
    predictions = pd.read_csv(project / "plots/resnet/predictions.csv")
    probs = predictions[[c for c in predictions.columns if c.startswith("p_")]].to_numpy()
    assert np.allclose(probs, whole.softmax(1).numpy(), atol=2e-6)


def test_changing_loss_reruns_only_training_evaluation_and_plots(clean):
    out = run(clean, "dvc", "exp", "run", "-S", "loss=focal").stdout
    assert stages_run(out) == stages_of("cnn", "resnet", stages=TRAINING)
    for stage in DATA_STAGES | stages_of("cnn", "resnet", stages=("init",)):
        assert f"Stage '{stage}' didn't change, skipping" in out
    diff = json.loads(run(clean, "dvc", "metrics", "diff", "--json").stdout)
    assert "test_loss" in diff["metrics/cnn.json"] and "test_loss" in diff["metrics/resnet.json"]
    shown = json.loads(run(clean, "dvc", "exp", "show", "--json").stdout)
    assert "focal" in json.dumps(shown)
    (exp,) = shown[1]["experiments"]
    metrics = exp["revs"][0]["data"]["metrics"]
    assert {f: sorted(m["data"]) for f, m in metrics.items()} == {
        "metrics/cnn.json": sorted(HEADLINE), "metrics/resnet.json": sorted(HEADLINE),
        "metrics/cnn_crossval.json": [], "metrics/resnet_crossval.json": [],
    }  # fmt: skip


def test_results_records_experiments_and_builds_the_table(clean, tmp_path):
    """ferpipe.results on real `dvc exp show` output: sample runs are skipped by default; an
    experiment's rows name what differs from params.yaml, the README section is the table."""
    defaults = shutil.copy(clean / "params.yaml", tmp_path / "params.yaml")  # exp run edits it
    run(clean, "dvc", "exp", "run", "-S", "zoo.cnn.lr=0.0005")  # the CNN alone re-trains
    shown = json.loads(run(clean, "dvc", "exp", "show", "--json").stdout)
    assert results.record(shown, tmp_path / "runs") == []
    written = results.record(shown, tmp_path / "runs", skip=())
    assert len(written) >= 2  # the baseline commit and the experiments so far
    assert results.record(shown, tmp_path / "runs", skip=()) == []  # recorded once
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{results.BEGIN}\nold\n{results.END}\ntail\n")
    table = results.build(tmp_path / "runs", tmp_path / "seed000", readme, defaults)
    cnn = table[table["changes"] == "zoo.cnn.lr=0.0005"].iloc[0]
    assert cnn["cell"] == "CNN 1 ep, multiclass, ce" and np.isnan(cnn["test_accuracy_seed000"])
    (record,) = [r for r in map(json.loads, map(Path.read_text, written))
                 if r["params"]["zoo"]["cnn"]["lr"] == 0.0005]  # fmt: skip
    assert record["params"]["loss"] == "ce" and record["code"] == shown[1]["rev"]
    assert 100 * record["metrics"]["cnn"]["test_accuracy"] == pytest.approx(cnn["test_accuracy"])
    assert {
        "CNN 1 ep, multiclass, ce",
        "ResNet18 1 ep, no ImageNet weights, multiclass, ce",
    } <= set(table["cell"])  # and the cells of the other tests' experiments
    text = readme.read_text()
    assert (tmp_path / "seed000.md").read_text() in text and text.endswith(f"{results.END}\ntail\n")
    assert (tmp_path / "seed000.png").read_bytes()[:4] == b"\x89PNG"
    # The README's view of the experiments: the changed params and metrics only (the metrics
    # files hold the headline figures alone; test_changing_loss checks it), terminal-sized.
    csv = run(clean, "dvc", "exp", "show", "--csv", "--only-changed", "--drop",
              "^(src|stages|data|models)/").stdout  # fmt: skip
    columns = csv.splitlines()[0].split(",")
    names = {c.rsplit(":", 1)[-1] for c in columns}  # "metrics/cnn.json:test_loss" when ambiguous
    assert {"zoo.cnn.lr", "test_loss"} <= names and len(columns) <= 24, columns
    assert len(pd.read_csv(tmp_path / "seed000.csv")) == len(table)


def test_changing_one_entry_reruns_only_that_entrys_stages(clean):
    """More epochs re-run that entry alone, continuing the baseline's run: the same results as
    training the 2 epochs afresh."""
    out = run(clean, "dvc", "exp", "run", "-S", "zoo.resnet.epochs=2").stdout
    assert stages_run(out) == stages_of("resnet", stages=TRAINING)
    record = json.loads((clean / "metrics/resnet_training.json").read_text())
    assert record["resumed_from_epoch"] == 1 and record["epochs_run"] == 2
    history = (clean / "plots/resnet/history.csv").read_text().splitlines()
    assert len(history) == 3
    diff = json.loads(run(clean, "dvc", "metrics", "diff", "--json").stdout)
    assert "metrics/resnet.json" in diff and "metrics/cnn.json" not in diff
    continued = {name: (clean / name).read_bytes() for name in RESULTS}
    run(clean, "dvc", "exp", "run", "-S", "zoo.resnet.epochs=2", "-S", "train.resume=false")
    record = json.loads((clean / "metrics/resnet_training.json").read_text())
    assert record["resumed_from_epoch"] == 0 and record["epochs_run"] == 2
    assert {name: (clean / name).read_bytes() for name in RESULTS} == continued


def test_seed_000_batch_norm_recomputes_the_trunk_every_step(clean):
    out = run(clean, "dvc", "exp", "run", "-S", "zoo.resnet.args.freeze_bn=false").stdout
    assert stages_run(out) == stages_of("resnet")
    assert not (clean / "data/features/resnet/train.npy").exists()
    record = json.loads((clean / "metrics/resnet_training.json").read_text())
    assert record["features_cached"] is False


def test_models_selects_the_entries_an_experiment_trains(clean):
    out = run(clean, "dvc", "exp", "run", "-S", "models=[seed004]").stdout
    assert stages_run(out) == stages_of("seed004")
    record = json.loads((clean / "metrics/seed004_training.json").read_text())
    assert record["arch"] == "vgg_cnn" and record["epochs"] == 1
    detail = json.loads((clean / "metrics/seed004_detail.json").read_text())
    assert detail["splits"]["PublicTest+PrivateTest"]["test_images"] == 2 * TEST
    shown = json.loads(run(clean, "dvc", "exp", "show", "--json").stdout)
    assert "metrics/seed004.json" in json.dumps(shown)


def test_seven_classes_select_on_public_test_and_report_private_test(clean):
    out = run(clean, "dvc", "exp", "run", "-S", "task=all", "-S", "split.validation=publictest",
              "-S", "models=[seed001_m1]", "-S", "train.keep=best").stdout  # fmt: skip
    assert {"balance", "split"} | stages_of("seed001_m1") <= stages_run(out)
    headline = json.loads((clean / "metrics/seed001_m1.json").read_text())
    detail = json.loads((clean / "metrics/seed001_m1_detail.json").read_text())
    metrics, by_split = detail["splits"]["PrivateTest"], detail["splits"]
    assert detail["test_split"] == "PrivateTest" and metrics["test_images"] == 7 * PER_SPLIT
    assert len(metrics["per_class"]) == 7 and len(metrics["confusion_matrix"]) == 7
    assert {k: v["test_images"] for k, v in by_split.items()} == {
        "PublicTest": 7 * PER_SPLIT, "PrivateTest": 7 * PER_SPLIT,
        "PublicTest+PrivateTest": 14 * PER_SPLIT,
    }  # fmt: skip
    assert metrics["test_accuracy"] == headline["test_accuracy"]
    predictions = (clean / "plots/seed001_m1/predictions.csv").read_text().splitlines()
    assert len(predictions) == 7 * PER_SPLIT + 1
    assert all(line.startswith("PrivateTest_") for line in predictions[1:])
    record = json.loads((clean / "metrics/seed001_m1_training.json").read_text())
    assert record["train_images"] == 7 * 24  # the whole capped training pool: nothing held out
    history = pd.read_csv(clean / "plots/seed001_m1/history.csv")
    # seed 001's recipe stops early on the validation loss: the epoch kept is PublicTest's lowest
    assert record["kept_epoch"] == history["val_loss"].idxmin() + 1


def test_the_binary_task_trains_and_scores_happy_against_sad(clean):
    out = run(clean, "dvc", "exp", "run", "-S", "task=binary", "-S", "models=[cnn]").stdout
    assert {"balance", "split"} | stages_of("cnn") <= stages_run(out)
    headline = json.loads((clean / "metrics/cnn.json").read_text())
    metrics = json.loads((clean / "metrics/cnn_detail.json").read_text())["splits"][
        "PublicTest+PrivateTest"
    ]
    assert list(metrics["per_class"]) == ["happy", "sad"] and len(metrics["confusion_matrix"]) == 2
    assert metrics["test_images"] == 2 * 2 * PER_SPLIT
    assert headline["top2_accuracy"] == 1.0  # two classes: every label is in the top 2
    assert headline["test_accuracy"] == metrics["test_accuracy"]
    predictions = (clean / "plots/cnn/predictions.csv").read_text().splitlines()
    assert len(predictions) == 2 * 2 * PER_SPLIT + 1


def test_cross_validation_trains_each_fold_by_the_recipe_and_shows_the_mean(clean):
    out = run(clean, "dvc", "exp", "run", "-S", "models=[seed002]", "-S", "split.folds=2",
              "-S", "zoo.seed002.epochs=2").stdout  # fmt: skip
    assert stages_of("seed002") <= stages_run(out)
    summary = json.loads((clean / "metrics/seed002_crossval.json").read_text())
    assert summary["folds"] == 2 and len(summary["per_fold"]) == 2
    for figure in ("val_accuracy", "macro_f1", "val_loss", "kept_epoch"):
        values = [fold[figure] for fold in summary["per_fold"]]
        assert summary["mean"][figure] == pytest.approx(np.mean(values), abs=1e-6)
        assert summary["std"][figure] == pytest.approx(np.std(values, ddof=1), abs=1e-6)
    assert all(fold["kept_epoch"] == 2 for fold in summary["per_fold"])  # keep last
    shown = json.loads(run(clean, "dvc", "exp", "show", "--json").stdout)
    crossvals = [exp["revs"][0]["data"]["metrics"].get("metrics/seed002_crossval.json")
                 for exp in shown[1]["experiments"]]  # fmt: skip
    assert summary["mean"] in [c["data"]["mean"] for c in crossvals if c]
    history = pd.read_csv(clean / "plots/seed002/history.csv")
    assert list(history["lr"]) == [0.01, 0.01]  # seed 002: Adam at 0.01, no schedule
    assert (clean / "plots/seed002/augmented.png").read_bytes()[:4] == b"\x89PNG"


def test_dacl_trains_with_its_sparse_center_loss_and_draws_its_attention(clean):
    out = run(clean, "dvc", "exp", "run", "-S", "models=[seed003]", "-S", "zoo.seed003.epochs=1",
              "-S", "zoo.seed003.args.image_size=32", "-S", "zoo.seed003.args.weights=none").stdout  # fmt: skip
    assert stages_of("seed003") <= stages_run(out)
    headline = json.loads((clean / "metrics/seed003.json").read_text())
    assert 0 <= headline["balanced_accuracy"] <= 1  # seed 003's "average accuracy"
    model, _ = models.load(clean / "models/seed003.pt")
    assert model.arch == "dacl" and model.centers.abs().sum() > 0
    for png in ("saliency", "activations", "filters", "attention"):
        assert (clean / f"plots/seed003/explain/{png}.png").read_bytes()[:4] == b"\x89PNG"


def test_forced_repro_reproduces_every_result_byte_for_byte(clean):
    before = {name: (clean / name).read_bytes() for name in RESULTS}
    out = run(clean, "dvc", "repro", "-f").stdout
    assert stages_run(out) == ALL_STAGES
    assert {name: (clean / name).read_bytes() for name in RESULTS} == before


def test_bad_parameter_stops_with_one_clear_line(clean):
    done = run(clean, "dvc", "exp", "run", "-S", "loss=hinge", check=False)
    assert done.returncode != 0
    errors = [
        line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error: ")
    ]
    assert errors == ["error: params.yaml: loss='hinge' must be one of: ce, focal"]
    assert "Traceback" not in done.stdout + done.stderr


def one_error(done: subprocess.CompletedProcess) -> str:
    """The single `error:` line of a failed run (and no traceback)."""
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert done.returncode != 0 and len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


def test_diverged_training_stops_and_keeps_the_previous_results(clean):
    before = (clean / "metrics/cnn.json").read_bytes()
    done = run(clean, "dvc", "exp", "run", "-S", "zoo.cnn.lr=1e30", check=False)
    assert re.fullmatch(
        r"error: training cnn diverged: loss (nan|inf) at step \d+ of epoch 1; nothing was "
        r"written - lower its learning rate \(zoo.cnn.lr, now 1e\+30; try 1e\+29\)",
        one_error(done),
    )
    assert not (clean / "models/cnn.pt").exists()
    assert (clean / "metrics/cnn.json").read_bytes() == before


def test_a_class_the_task_needs_is_refused_naming_the_source(clean, tmp_path):
    lacking = tmp_path / "no_disgust.zip"
    with (
        zipfile.ZipFile(clean / SAMPLE) as src,
        zipfile.ZipFile(lacking, "w") as dst,
    ):
        for info in src.infolist():
            if "/disgust/" not in info.filename or info.filename.startswith("test/"):
                dst.writestr(info, src.read(info))
    done = run(
        clean, "dvc", "exp", "run", "-S", f"data.source={lacking}", "-S", "task=all", check=False
    )
    assert one_error(done).startswith(
        f"error: {lacking}: the data has no training images of 'disgust', which task=all needs"
    )
