"""End to end: the real pipeline with real DVC in a temporary git repository, on tiny settings."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

pytestmark = pytest.mark.slow

PROJECT_FILES = ["dvc.yaml", "params.yaml", "pyproject.toml", ".gitignore", ".dvcignore", "src", "stages",
                 "data/sample", ".dvc/config"]  # fmt: skip
TINY = {
    "balance": {"max_per_class": 24},
    "train": {"batch_size": 16, "threads": 1},
    "cnn": {"epochs": 1},
    "resnet": {"epochs": 1, "image_size": 32, "weights": "none"},
}
RESULTS = ["metrics/cnn.json", "metrics/resnet.json", "metrics/data_quality.json",
           "plots/cnn/history.csv", "plots/resnet/history.csv",
           "plots/cnn/predictions.csv", "plots/resnet/predictions.csv"]  # fmt: skip
ALL_STAGES = {"download", "validate", "balance", "denoise", "split", "resnet_trunk", "train_cnn", "train_resnet",
              "evaluate@cnn", "evaluate@resnet", "plot@cnn", "plot@resnet"}  # fmt: skip
DATA_STAGES = {"download", "validate", "balance", "denoise", "split"}


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
        metrics = json.loads((project / f"metrics/{name}.json").read_text())
        for key in ("test_accuracy", "macro_precision", "macro_recall", "macro_f1", "top2_accuracy",
                    "balanced_accuracy", "test_loss", "confusion_matrix", "per_class", "weights"):  # fmt: skip
            assert key in metrics, key
        assert 0 <= metrics["test_accuracy"] <= 1
        assert sorted(metrics["per_class"]) == ["angry", "fear", "happy", "sad"]
        assert sum(map(sum, metrics["confusion_matrix"])) == metrics["test_images"] == 320
        training = json.loads((project / f"metrics/{name}_training.json").read_text())
        assert training["images_per_second"] > 0 and training["threads"] == 1
        assert training["channels_last"] is True and training["compiled"] is False
        assert training["versions"]["torch"]
        history = (project / f"plots/{name}/history.csv").read_text().splitlines()
        assert history[0] == "epoch,train_loss,train_accuracy,val_loss,val_accuracy"
        assert len(history) == 2
        predictions = (project / f"plots/{name}/predictions.csv").read_text().splitlines()
        assert predictions[0].startswith("id,actual,predicted,p_angry") and len(predictions) == 321
        for png in ("confusion.png", "curves.png"):
            assert (project / f"plots/{name}/{png}").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((project / "metrics/resnet.json").read_text())["weights"] == "none"
    assert (
        json.loads((project / "metrics/resnet_training.json").read_text())["trunk_cached"] is True
    )
    quality = json.loads((project / "metrics/data_quality.json").read_text())
    assert quality["images"] == 2310
    shown = json.loads(run(project, "dvc", "plots", "show", "--json").stdout)["data"]
    assert {"Loss per epoch", "Accuracy per epoch", "Confusion matrix (test)"} <= set(shown)
    assert {
        f"plots/{m}/{png}.png" for m in ("cnn", "resnet") for png in ("confusion", "curves")
    } <= set(shown)


def test_changing_loss_reruns_only_training_evaluation_and_plots(clean):
    out = run(clean, "dvc", "exp", "run", "-S", "loss=focal").stdout
    assert stages_run(out) == ALL_STAGES - DATA_STAGES - {"resnet_trunk"}
    for stage in DATA_STAGES | {"resnet_trunk"}:
        assert f"Stage '{stage}' didn't change, skipping" in out
    diff = json.loads(run(clean, "dvc", "metrics", "diff", "--json").stdout)
    assert "test_loss" in diff["metrics/cnn.json"] and "test_loss" in diff["metrics/resnet.json"]
    shown = json.loads(run(clean, "dvc", "exp", "show", "--json").stdout)
    assert "focal" in json.dumps(shown)


def test_more_resnet_epochs_leave_the_cnn_cached(clean):
    out = run(clean, "dvc", "exp", "run", "-S", "resnet.epochs=2").stdout
    assert stages_run(out) == {"train_resnet", "evaluate@resnet", "plot@resnet"}
    history = (clean / "plots/resnet/history.csv").read_text().splitlines()
    assert len(history) == 3
    diff = json.loads(run(clean, "dvc", "metrics", "diff", "--json").stdout)
    assert "metrics/resnet.json" in diff and "metrics/cnn.json" not in diff


def test_seed_000_batch_norm_recomputes_the_trunk_every_step(clean):
    out = run(clean, "dvc", "exp", "run", "-S", "resnet.freeze_bn=false").stdout
    assert stages_run(out) == {"resnet_trunk", "train_resnet", "evaluate@resnet", "plot@resnet"}
    assert not (clean / "data/trunk/train.npy").exists()
    record = json.loads((clean / "metrics/resnet_training.json").read_text())
    assert record["trunk_cached"] is False


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
