"""A longer run of an entry continues a shorter run's end instead of repeating its epochs.

Seed 000 trains its ResNet for 5 epochs and again for 10. Where the schedule does not depend on
the number of epochs, early stopping is off and the last epoch is kept, the first 5 epochs of
the 10-epoch run are the 5-epoch run, bit for bit (same seed, data, code, parameters and
machine). So the train stage saves each run's end (weights, optimiser and schedule state, every
generator, the history) in `.resume/<entry>/<fingerprint>.pt`, the fingerprint covering all
that its epochs depend on except their number; a longer run with that fingerprint loads it and
trains the remaining epochs alone. It gives the fresh run's weights and history
(tests/test_resume.py); the training record says where it started. Like DVC's run cache it is a
cache: deleting `.resume` or `train.resume: false` starts every run at epoch 1.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ferpipe import dataset, params, runinfo
from ferpipe.augment import Augmentation
from ferpipe.optim import Optimisation
from ferpipe.params import StageParams
from ferpipe.training import EpochRecord, Plan, Progress

STORE = Path(".resume")
KEEP = 4  # end states kept per entry, the newest (a ResNet's is about 110 MB)
EPOCH_FREE_SCHEDULES = ("none", "step", "plateau")  # the lr at an epoch ignores the total


def obstacle(plan: Plan, entry: dict[str, Any]) -> str | None:
    """Why a longer run of this recipe would not begin with a shorter one's epochs, or None."""
    if plan.keep != "last":
        return "train.keep is best: a run ends with its best epoch's weights, not its last"
    if plan.patience:
        return f"zoo.{plan.name}.early_stopping is on: a longer run may stop elsewhere"
    if entry["schedule"]["name"] not in EPOCH_FREE_SCHEDULES:
        return f"zoo.{plan.name}.schedule {entry['schedule']['name']} spans all the epochs"
    return None


def fingerprint(p: StageParams, device: torch.device) -> str:
    """Digest of what the epochs of stage `p.stage` depend on except their number: its
    parameters but zoo.<entry>.epochs and train.resume, the bytes of every dependency dvc.yaml
    lists, the PyTorch version, the CPU or GPU and the thread count."""
    name = p.stage.partition("@")[2]
    values = copy.deepcopy(dict(p.tree))
    del values["zoo"][name]["epochs"], values["train"]["resume"]
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode())
    for dep in params.declared(p.stage, params.read(), field="deps"):
        root = Path(dep)
        for file in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(f"{file}\0".encode())
                with file.open("rb") as f:
                    digest.update(hashlib.file_digest(f, "sha256").digest())
    machine = [torch.__version__, runinfo.cpu_model(), str(device), torch.get_num_threads()]
    digest.update(json.dumps(machine).encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class Store:
    """Where one run's end state is saved and a shorter run's is looked for."""

    path: Path

    @classmethod
    def for_run(cls, p: StageParams, plan: Plan, device: torch.device) -> Store | None:
        """The store of stage `p.stage`'s run, or None when train.resume is off or a longer run
        would not begin with this one (`obstacle`)."""
        if not p["train.resume"] or obstacle(plan, p[f"zoo.{plan.name}"]):
            return None
        return cls(STORE / plan.name / f"{fingerprint(p, device)}.pt")

    def restore(
        self,
        plan: Plan,
        model: nn.Module,
        optimisation: Optimisation,
        augmentation: Augmentation,
        device: torch.device,
    ) -> Progress:
        """A shorter run's end loaded into `model`, the optimiser, the schedule and every
        generator, and its progress; a fresh start when there is none."""
        if not self.path.is_file():
            return Progress.start(plan.seed)
        state = torch.load(self.path, map_location=device, weights_only=True)
        if state["epochs"] >= plan.epochs:  # not shorter: a forced re-run trains afresh
            return Progress.start(plan.seed)
        model.load_state_dict(state["model"])
        optimisation.optimizer.load_state_dict(state["optimizer"])
        if optimisation.scheduler is not None:
            optimisation.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"].cpu())
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        augmentation.generator.set_state(state["augment"].cpu())
        generator = torch.Generator()
        generator.set_state(state["generator"].cpu())
        return Progress([EpochRecord(**row) for row in state["history"]], generator)

    def save(
        self,
        model: nn.Module,
        optimisation: Optimisation,
        progress: Progress,
        augmentation: Augmentation,
        device: torch.device,
    ) -> None:
        """This run's end, for a longer one to continue; the entry's oldest ends beyond KEEP go."""
        scheduler = optimisation.scheduler
        state = {
            "epochs": len(progress.history),
            "history": [asdict(row) for row in progress.history],
            "model": model.state_dict(),
            "optimizer": optimisation.optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "augment": augmentation.generator.get_state(),
            "generator": progress.generator.get_state(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with dataset.atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        ends = sorted(self.path.parent.glob("*.pt"), key=lambda f: f.stat().st_mtime)
        for old in ends[:-KEEP]:
            old.unlink()
