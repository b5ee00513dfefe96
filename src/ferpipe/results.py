"""The results table: every recorded full-data run next to seed 000's reported figure.

    python -m ferpipe.results            # record new experiments, then rebuild the table

Two steps, so that results outlast the machine. `record` reads `dvc exp show --json` and writes
each finished experiment that used real data (any `data.source` but the embedded sample) to
`results/runs/<name>-<rev>.json`: its params, its headline metrics per model and the commit
whose code it ran. `build` reads
only those committed files: runs that differ only in `seed` are one row (mean and standard
deviation), and a row's `changes` lists the parameters that differ from today's params.yaml,
so a row never hides what it ran. It writes `results/seed000.md`, `.csv` and `.png` and the
README's results section, between the markers below.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferpipe import dataset, params
from ferpipe.errors import FerError, exits_cleanly
from ferpipe.metrics import HEADLINE
from ferpipe.plots import plt, save_png

SAMPLE_SOURCE = "data/sample/fer2013_sample.zip"
RUNS = Path("results/runs")
TABLE = Path("results/seed000")
README = Path("README.md")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
SHOWN = {"test_accuracy": "accuracy", "macro_f1": "macro F1", "top2_accuracy": "top-2"}
ARCH_NAMES = {"study_cnn": "CNN", "resnet18": "ResNet18"}
# Parameters that identify a row by themselves (columns) or select rather than configure.
OWN_COLUMNS = ("task", "loss", "seed", "models", "data.source", "data.sha256")

# Seed 000's reported test figures (%), by (arch, epochs, task, loss): accuracy, macro F1,
# top-2 accuracy (not reported for the binary task, where it is always 100 %).
SEED000: dict[tuple[str, int, str, str], tuple[float, float, float | None]] = {
    ("study_cnn", 10, "binary", "ce"): (86.36, 86.01, None),
    ("study_cnn", 10, "binary", "focal"): (86.10, 85.81, None),
    ("study_cnn", 10, "multiclass", "ce"): (60.74, 56.70, 80.65),
    ("study_cnn", 10, "multiclass", "focal"): (63.42, 60.36, 82.53),
    ("resnet18", 5, "binary", "ce"): (88.02, 87.87, None),
    ("resnet18", 5, "binary", "focal"): (88.28, 88.02, None),
    ("resnet18", 5, "multiclass", "ce"): (57.31, 54.99, 79.39),
    ("resnet18", 5, "multiclass", "focal"): (63.34, 57.94, 83.61),
    ("resnet18", 10, "binary", "ce"): (88.18, 87.96, None),
    ("resnet18", 10, "binary", "focal"): (84.51, 84.44, None),
    ("resnet18", 10, "multiclass", "ce"): (59.30, 54.78, 80.19),
    ("resnet18", 10, "multiclass", "focal"): (60.18, 57.61, 79.97),
}


# --- record: dvc exp show --json -> results/runs/*.json ---------------------------------------


def finished_runs(shown: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Rev, name, params and metrics of every commit and finished experiment shown, with the
    commit whose code it ran (`baseline`: an experiment's parent, a commit itself)."""
    for commit in shown:
        here = {"baseline": commit["rev"]}
        if commit["rev"] != "workspace" and commit.get("data"):
            yield commit["data"] | here | {"name": commit.get("name")}
        for exp in commit.get("experiments") or ():
            state = (exp.get("executor") or {}).get("state", "success")
            for rev in exp["revs"] if state == "success" else ():
                if rev["rev"] != "workspace" and rev.get("data"):
                    yield rev["data"] | here | {"name": rev.get("name") or exp.get("name")}


def run_record(run: Mapping[str, Any], skip: tuple[str, ...]) -> dict[str, Any] | None:
    """The lasting record of one run, or None for a run on a `skip` source (the sample) or one
    without every headline metric of every model it selected."""
    tree = (run.get("params") or {}).get("params.yaml", {}).get("data")
    if not tree or tree.get("data", {}).get("source") in skip:
        return None
    files = run.get("metrics") or {}
    scores = {}
    for entry in tree.get("models", ()):
        data = files.get(f"metrics/{entry}.json", {}).get("data") or {}
        if not all(k in data for k in HEADLINE):
            return None
        scores[entry] = {k: data[k] for k in HEADLINE}
    if not scores:
        return None
    return {"name": run["name"] or run["rev"][:7], "rev": run["rev"], "code": run["baseline"],
            "params": tree, "metrics": scores}  # fmt: skip


def record(
    shown: list[dict[str, Any]], runs_dir: Path = RUNS, skip: tuple[str, ...] = (SAMPLE_SOURCE,)
) -> list[Path]:
    """Write the records of runs not yet recorded, but for runs on the `skip` sources; returns
    the new files."""
    written = []
    for run in finished_runs(shown):
        rec = run_record(run, skip)
        path = rec and runs_dir / f"{rec['name']}-{rec['rev'][:7]}.json"
        if path and not path.exists():
            dataset.write_json(rec, path)
            written.append(path)
    return written


def exp_show() -> list[dict[str, Any]]:
    """`dvc exp show --json` over all commits (experiments hang off the commit they began at)."""
    done = subprocess.run(
        ["dvc", "exp", "show", "--json", "--all-commits"], capture_output=True, text=True
    )
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise FerError(f"dvc exp show failed: {last}")
    return json.loads(done.stdout)


# --- build: results/runs/*.json -> table, CSV, PNG, README -------------------------------------


@dataclass(frozen=True)
class Cell:
    """What one row ran: model, protocol, and every other parameter that differs from today."""

    arch: str
    epochs: int
    task: str
    loss: str
    weights: str
    data: str
    changes: str

    @property
    def label(self) -> str:
        name = ARCH_NAMES.get(self.arch, self.arch)
        weights = {"none": ", no ImageNet weights", "imagenet": ", ImageNet weights"}
        note = weights.get(self.weights, f", weights {self.weights}") if self.weights else ""
        return f"{name} {self.epochs} ep{note}, {self.task}, {self.loss}"


def changes(flat: Mapping[str, Any], defaults: Mapping[str, Any], entry: str) -> str:
    """`key=value` for each parameter that bears on `entry` and differs from `defaults`."""

    def bears(key: str) -> bool:
        if key in OWN_COLUMNS or key.startswith(f"zoo.{entry}.epochs"):
            return False
        if key.startswith("zoo."):
            return key.startswith(f"zoo.{entry}.") and not key.startswith(
                f"zoo.{entry}.args.weights"
            )
        if key.startswith("augment."):  # only the preset the entry uses
            return key.startswith(f"augment.{flat.get(f'zoo.{entry}.augment')}.")
        weights = "train.class_weights."
        return not key.startswith(weights) or key == weights + flat["task"]

    diff = [f"{k}={flat[k]}" for k in sorted(flat) if bears(k) and flat[k] != defaults.get(k)]
    return ", ".join(diff)


def cells(records: Iterable[Mapping[str, Any]], defaults: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (cell, seed) of every model in every record."""
    rows = []
    for rec in records:
        flat = params.flatten(rec["params"])
        for entry, scores in rec["metrics"].items():
            cell = Cell(
                arch=flat[f"zoo.{entry}.arch"],
                epochs=flat[f"zoo.{entry}.epochs"],
                task=flat["task"],
                loss=flat["loss"],
                weights=str(flat.get(f"zoo.{entry}.args.weights", "")),
                data=Path(flat["data.source"]).name,
                changes=changes(flat, defaults, entry),
            )
            rows.append({"cell": cell, "seed": flat["seed"], "run": rec["name"], **scores})
    return pd.DataFrame(rows)


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each cell, next to seed 000's figures (%)."""
    out = []
    for cell, group in runs.groupby("cell", sort=False):
        group = group.drop_duplicates("seed", keep="last")
        reported = SEED000.get((cell.arch, cell.epochs, cell.task, cell.loss), (np.nan,) * 3)
        row: dict[str, Any] = {"cell": cell.label, "data": cell.data, "changes": cell.changes,
                               "seeds": " ".join(str(s) for s in sorted(group["seed"]))}  # fmt: skip
        for key, seed000 in zip(SHOWN, reported, strict=True):
            seed000 = np.nan if seed000 is None else seed000
            values = 100 * group[key].to_numpy(float)
            row[key] = values.mean()
            row[f"{key}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
            row[f"{key}_seed000"] = seed000
            row[f"{key}_diff"] = values.mean() - seed000
        out.append(row)
    frame = pd.DataFrame(out)
    return frame.sort_values(["data", "cell", "changes"], kind="stable").reset_index(drop=True)


def _pct(value: float, std: float = np.nan, signed: bool = False) -> str:
    if np.isnan(value):
        return ""
    text = f"{value:+.2f}" if signed else f"{value:.2f}"
    return text + (f" ± {std:.2f}" if not np.isnan(std) else "")


def markdown(table: pd.DataFrame) -> str:
    """The table as GitHub markdown, percentages with two decimals."""
    head = ["cell", "data", "changes from params.yaml", "seeds"]
    for name in SHOWN.values():
        head += [name, "seed 000", "diff"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cols = [r["cell"], r["data"], r["changes"] or "none", r["seeds"]]
        for key in SHOWN:
            cols += [_pct(r[key], r[f"{key}_std"]), _pct(r[f"{key}_seed000"]),
                     _pct(r[f"{key}_diff"], signed=True)]  # fmt: skip
        lines.append("| " + " | ".join(cols) + " |")
    note = ("Test split: PublicTest+PrivateTest. Mean ± sample standard deviation over the seeds "
            "listed; diff = ours - seed 000, in points.")  # fmt: skip
    return "\n".join(lines) + "\n\n" + note + "\n"


def picture(table: pd.DataFrame, path: Path) -> None:
    """Horizontal bars: test accuracy of each row (with its seed spread) and seed 000's."""
    labels = [
        f"{c}\n{ch}" if ch else c for c, ch in zip(table["cell"], table["changes"], strict=True)
    ]
    y = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(10, 1 + 0.55 * len(table)))
    ax.barh(y - 0.2, table["test_accuracy"], 0.4, xerr=table["test_accuracy_std"].fillna(0),
            label="this repository", color="tab:blue")  # fmt: skip
    ax.barh(y + 0.2, table["test_accuracy_seed000"].fillna(0), 0.4, label="seed 000",
            color="tab:grey")  # fmt: skip
    ax.set(yticks=y, yticklabels=labels, xlabel="test accuracy (%)", xlim=(0, 100))
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    save_png(fig, path)


def load_records(runs_dir: Path = RUNS) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*.json"))]


def readme_with(text: str, block: str) -> str:
    """`text` with the part between the results markers replaced by `block`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise FerError(f"README.md has no {BEGIN} ... {END} section to fill")
    return text[: start + len(BEGIN)] + "\n" + block + text[end:]


def build(
    runs_dir: Path = RUNS,
    out: Path = TABLE,
    readme: Path = README,
    defaults: Path = params.PARAMS_FILE,
) -> pd.DataFrame:
    """Rebuild the markdown, CSV and PNG tables and the README section from the records; a
    row's changes are relative to the `defaults` params file."""
    records = load_records(runs_dir)
    if not records:
        raise FerError(f"no recorded runs in {runs_dir}/; run a full-data experiment first")
    table = summary(cells(records, params.flatten(params.read(defaults))))
    block = markdown(table)
    with dataset.atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(block)
    with dataset.atomic_path(out.with_suffix(".csv")) as tmp:
        table.round(4).to_csv(tmp, index=False)
    picture(table, out.with_suffix(".png"))
    readme.write_text(readme_with(readme.read_text(), block))
    return table


@exits_cleanly
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-record", action="store_true", help="only rebuild from results/runs")
    args = parser.parse_args()
    for path in () if args.no_record else record(exp_show()):
        print(f"recorded {path}")
    table = build()
    print(f"{len(table)} rows: {TABLE}.md, .csv, .png and README.md")


if __name__ == "__main__":
    main()
