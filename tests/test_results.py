"""The results table: rows, seed statistics, changes from params.yaml, and the README section."""

import copy
import shutil

import numpy as np
import pytest

from ferpipe import params, results
from ferpipe.errors import FerError
from ferpipe.metrics import HEADLINE

from .conftest import ROOT

DEFAULTS = params.read(ROOT / "params.yaml")


def record(seed: int, accuracy: float, **changes) -> dict:
    """A run record as `results.record` writes it, with dotted parameter changes."""
    tree = copy.deepcopy(DEFAULTS)
    tree["seed"], tree["data"]["source"], tree["models"] = seed, "/data/fer2013.zip", ["cnn"]
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = tree
        for key in parents:
            node = node[key]
        node[last] = value
    scores = dict.fromkeys(HEADLINE, 0.5) | {"test_accuracy": accuracy}
    return {"name": f"run{seed}", "rev": "0" * 40, "params": tree, "metrics": {"cnn": scores}}


def table_of(*records: dict):
    return results.summary(results.cells(records, params.flatten(DEFAULTS)))


def test_seeds_of_one_configuration_are_one_row_with_mean_and_sample_std():
    table = table_of(record(1, 0.60), record(2, 0.62), record(3, 0.64))
    (row,) = table.to_dict("records")
    cnn = DEFAULTS["zoo"]["cnn"]
    assert row["cell"] == f"CNN {cnn['epochs']} ep, multiclass, ce" and row["seeds"] == "1 2 3"
    assert row["test_accuracy"] == pytest.approx(62.0)
    assert row["test_accuracy_std"] == pytest.approx(2.0)
    reported = results.SEED000[("study_cnn", cnn["epochs"], "multiclass", "ce")][0]
    assert row["test_accuracy_diff"] == pytest.approx(62.0 - reported)


def test_a_changed_parameter_is_its_own_row_and_says_so():
    table = table_of(record(1, 0.6), record(1, 0.5, **{"zoo.cnn.lr": 0.123, "train.keep": "best"}))
    assert list(table["changes"]) == ["", "train.keep=best, zoo.cnn.lr=0.123"]
    assert np.isnan(table["test_accuracy_std"]).all()  # one seed each: no spread


def test_parameters_that_do_not_bear_on_the_model_are_not_changes():
    other = {"zoo.resnet.lr": 0.5, "train.class_weights.binary": [1.0, 9.0], "models": ["x"],
             "augment.seed004.pick": "one"}  # fmt: skip
    assert list(table_of(record(1, 0.6, **other))["changes"]) == [""]


def test_the_binary_task_has_no_seed_000_top2_and_markdown_leaves_it_blank():
    table = table_of(record(1, 0.9, task="binary"))
    assert np.isnan(table["top2_accuracy_seed000"][0])
    line = results.markdown(table).splitlines()[2]
    assert "| 90.00 | 86.36 | +3.64 |" in line and line.endswith("| 50.00 |  |  |")


def test_readme_section_is_replaced_and_a_missing_marker_is_refused():
    text = f"a\n{results.BEGIN}\nold\n{results.END}\nb\n"
    assert results.readme_with(text, "new\n") == f"a\n{results.BEGIN}\nnew\n{results.END}\nb\n"
    with pytest.raises(FerError, match="README.md has no"):
        results.readme_with("no markers", "x")


def test_the_readme_results_section_is_the_commands_output(tmp_path):
    """`python -m ferpipe.results` built the README's table from the committed run records."""
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    results.build(ROOT / results.RUNS, tmp_path / "seed000", readme, ROOT / "params.yaml")
    assert readme.read_text() == (ROOT / "README.md").read_text()
    built = (tmp_path / "seed000.md").read_text()
    assert built == (ROOT / results.TABLE.with_suffix(".md")).read_text()
