import copy
import re

import pytest
import yaml

from ferpipe import augment, models, optim, params
from ferpipe.errors import FerError

from .conftest import ROOT

DEFAULTS = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(key: str, value):
    tree = copy.deepcopy(DEFAULTS)
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node[part]
    node[leaf] = value
    return tree


def test_project_params_are_valid():
    params.validate(DEFAULTS)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("loss", "mse", "loss='mse' must be one of: ce, focal"),
        ("task", "sevenclass", "task='sevenclass' must be one of: binary, multiclass, all"),
        ("zoo.cnn.epochs", 0, "zoo.cnn.epochs=0 must be a positive integer"),
        ("zoo.resnet.epochs", -5, "zoo.resnet.epochs=-5 must be a positive integer"),
        ("zoo.resnet.epochs", 2.5, "zoo.resnet.epochs=2.5 must be a positive integer"),
        ("zoo.cnn.lr", 0, "zoo.cnn.lr=0 must be a finite number > 0"),
        ("zoo.resnet.lr", -0.1, "zoo.resnet.lr=-0.1 must be a finite number > 0"),
        (
            "zoo.seed004.weight_decay",
            -1,
            "zoo.seed004.weight_decay=-1 must be a finite number >= 0",
        ),
        ("zoo.cnn.arch", "", "zoo.cnn.arch='' must be a non-empty string"),
        ("zoo.cnn.args", [1], "zoo.cnn.args must be a mapping of the architecture's arguments"),
        ("zoo.cnn.epoch", 3, "unknown key 'zoo.cnn.epoch'; known keys: zoo.cnn.args, zoo.cnn.arch"),
        ("zoo.mine", 3, "zoo.mine must be a mapping with keys args, arch, epochs"),
        ("models", [], "models=[] must be a non-empty list of distinct zoo entry names"),
        ("models", ["cnn", "cnn"], "must be a non-empty list of distinct zoo entry names"),
        (
            "models",
            ["cnn", "vgg"],
            "models lists vgg, not entries of zoo; use some of: cnn, resnet",
        ),
        (
            "split.validation",
            "kfold",
            "split.validation='kfold' must be one of: holdout, publictest",
        ),
        (
            "train.class_weights.all",
            [1] * 6,
            "must be a list of 7 finite positive numbers, one per class (angry, disgust",
        ),
        ("train.batch_size", 0, "train.batch_size=0 must be a positive integer"),
        (
            "train.class_weights.binary",
            [1.0],
            "must be a list of 2 finite positive numbers, one per class (happy, sad)",
        ),
        (
            "train.class_weights.multiclass",
            [1, 1, 1],
            "must be a list of 4 finite positive numbers",
        ),
        (
            "train.class_weights.multiclass",
            [1, 1, 1, 0],
            "must be a list of 4 finite positive numbers",
        ),
        ("train.focal_gamma", -1, "train.focal_gamma=-1 must be a finite number >= 0"),
        ("train.keep", "first", "must be one of: last, best"),
        ("split.val_fraction", 1.0, "must be a number strictly between 0 and 1"),
        ("denoise.kernel_size", 4, "must be an odd positive integer"),
        ("balance.max_per_class", -1, "balance.max_per_class=-1 must be an integer >= 0"),
        ("data.sha256", "abc", "must be empty or a 64-digit hexadecimal SHA-256"),
        ("data.source", "", "data.source='' must be a non-empty string"),
        ("seed", True, "seed=True must be an integer >= 0"),
        ("balance.drop_duplicates", "yes", "balance.drop_duplicates='yes' must be true or false"),
        ("train.channels_last", 1, "train.channels_last=1 must be true or false"),
        ("train.compile", "off", "train.compile='off' must be true or false"),
        ("train.resume", "yes", "train.resume='yes' must be true or false"),
        ("train.precision", "fp16", "train.precision='fp16' must be one of: fp32, bf16, auto"),
        ("train.device", "gpu", "train.device='gpu' must be one of: auto, cpu, cuda, cuda:<index>"),
        ("split.folds", 0, "split.folds=0 must be a positive integer"),
        ("zoo.cnn.backbone_lr", 0, "zoo.cnn.backbone_lr=0 must be null or a finite number > 0"),
        ("zoo.cnn.optimizer", "adam", "zoo.cnn.optimizer='adam' must be a mapping with a name"),
        ("zoo.cnn.schedule", {"every": 2}, "zoo.cnn.schedule={'every': 2} must be a mapping"),
        ("zoo.cnn.early_stopping", -1, "zoo.cnn.early_stopping=-1 must be an integer >= 0"),
        ("zoo.cnn.loss", "mse", "zoo.cnn.loss='mse' must be one of: shared, ce, focal"),
        (
            "zoo.cnn.class_weights",
            "balanced",
            "zoo.cnn.class_weights='balanced' must be one of: table, inverse_frequency, none",
        ),
        (
            "zoo.cnn.label_smoothing",
            1.0,
            "zoo.cnn.label_smoothing=1.0 must be a number >= 0 and < 1",
        ),
        (
            "zoo.cnn.augment",
            "strong",
            "zoo.cnn.augment='strong' is not a preset; use none or one of: seed001, seed002",
        ),
        ("augment", [], "augment must map preset names to presets"),
    ],
)
def test_bad_values_are_named_with_the_allowed_ones(key, value, message):
    with pytest.raises(FerError, match=re.escape(message)):
        params.validate(with_value(key, value))


def test_unknown_and_missing_keys_are_refused():
    with pytest.raises(FerError, match="unknown key 'cnn.epochs'; known keys:"):
        params.validate(with_value("cnn", {"epochs": 3}))
    tree = copy.deepcopy(DEFAULTS)
    del tree["loss"]
    with pytest.raises(FerError, match="missing key 'loss'"):
        params.validate(tree)
    del tree["zoo"]["cnn"]["lr"]
    with pytest.raises(FerError, match=r"missing key 'zoo.cnn.lr'"):
        params.validate(tree)


@pytest.mark.parametrize("entry", sorted(DEFAULTS["zoo"]))
def test_every_zoo_entry_names_a_registered_architecture_and_its_arguments(entry):
    spec = DEFAULTS["zoo"][entry]
    models.check_args(spec["arch"], spec["args"], f"zoo.{entry}.args")


def test_read_reports_broken_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("loss: [ce\n")
    with pytest.raises(FerError, match="not valid YAML"):
        params.read(bad)


def test_stage_params_expose_only_what_the_stage_declares():
    declared = params.StageParams(
        "balance", {"seed": 1, "task": "binary", "balance": {"max_per_class": 9}}
    )
    assert declared["balance.max_per_class"] == 9
    assert declared["balance"] == {"max_per_class": 9}
    with pytest.raises(
        FerError, match="stage 'balance' reads 'loss' but dvc.yaml does not list it"
    ):
        declared["loss"]


def test_for_stage_returns_the_dvc_yaml_declaration(monkeypatch):
    monkeypatch.chdir(ROOT)
    p = params.for_stage("evaluate@cnn")
    assert p["train.batch_size"] == DEFAULTS["train"]["batch_size"]
    with pytest.raises(FerError, match="does not list it"):
        p["zoo.cnn.epochs"]
    assert params.for_stage("init@resnet")["zoo.resnet"] == {
        k: DEFAULTS["zoo"]["resnet"][k] for k in ("arch", "args")
    }


def test_declared_keys_are_the_ones_dvc_reads_for_every_stage(tmp_path):
    """Every stage of dvc.yaml, with every zoo entry selected: the keys DVC tracks as the
    stage's params are the keys the stage is given."""
    from dvc.repo import Repo

    tree = with_value("models", list(DEFAULTS["zoo"]))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    repo = Repo.init(tmp_path, no_scm=True)
    stages = repo.index.stages
    assert len(stages) == 5 + 6 * len(tree["models"])
    for stage in stages:
        tracked = sorted(key for dep in stage.params for key in dep.params)
        assert sorted(params.declared(stage.name, tree, tmp_path / "dvc.yaml")) == tracked
    repo.close()


@pytest.mark.parametrize(
    ("stage", "message"),
    [("train", "no stage 'train'"), ("split@cnn", "no stage 'split@cnn'"),
     ("train@seed004", "no stage 'train@seed004'; train runs for cnn, resnet")],
)  # fmt: skip
def test_a_stage_dvc_yaml_does_not_define_is_refused(stage, message):
    with pytest.raises(FerError, match=re.escape(message)):
        params.declared(stage, DEFAULTS, ROOT / "dvc.yaml")


def test_params_are_read_the_way_dvc_reads_them(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("lr: 0.001", "lr: 1e-3", 1)
    assert "lr: 1e-3" in text  # PyYAML (YAML 1.1) reads this as the string '1e-3'
    (tmp_path / "params.yaml").write_text(text)
    tree = params.read(tmp_path / "params.yaml")
    assert tree["zoo"]["resnet"]["lr"] == 0.001
    (tmp_path / "params.yaml").write_text(text + "seed: 1\n")
    with pytest.raises(FerError, match="not valid YAML"):  # a duplicate key, as DVC refuses it
        params.read(tmp_path / "params.yaml")


def _numeric_keys(tree, prefix=""):
    """Every key whose value is a number, or a list of numbers (as key, index)."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _numeric_keys(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}", None
        elif isinstance(value, list) and value and isinstance(value[0], (int, float)):
            yield f"{prefix}{key}", 0


NUMERIC = [(k, i) for k, i in _numeric_keys(DEFAULTS) if ".args." not in k]


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize(("key", "index"), NUMERIC, ids=[k for k, _ in NUMERIC])
def test_non_finite_numbers_are_refused_for_every_numeric_key(key, index, bad):
    tree = copy.deepcopy(DEFAULTS)
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node[part]
    if index is None:
        node[leaf] = bad
    else:
        node[leaf][index] = bad
    with pytest.raises(FerError, match=re.escape(key)):
        params.validate(tree)
        # Options with arguments are checked by their registries, in the train stage.
        augment.check_presets(tree["augment"])
        for name, entry in tree["zoo"].items():
            optim.check(entry, name)


def test_non_finite_architecture_arguments_are_refused():
    with pytest.raises(FerError, match=r"args.dropout=inf must be a finite number"):
        models.check_args("vgg_cnn", {"dropout": float("inf")})
