"""dvc.yaml is the architecture: each stage must depend on all the code it runs."""

import ast
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def ferpipe_imports(path: Path, seen: set[str] | None = None) -> set[str]:
    """Files of the ferpipe modules `path` imports, and folders of the subpackages it imports,
    followed transitively (a subpackage through all its files)."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ferpipe"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("ferpipe")]
        for name in names:
            module = ROOT / "src" / name.replace(".", "/")
            package = module if (module / "__init__.py").is_file() and name != "ferpipe" else None
            target = package or module.with_suffix(".py")
            rel = target.relative_to(ROOT).as_posix()
            if not target.exists() or rel in seen or target.name == "__init__.py":
                continue
            if package is None and target.parent != ROOT / "src" / "ferpipe":
                continue  # a module inside a subpackage: covered by the subpackage's folder
            seen.add(rel)
            for file in sorted(package.glob("*.py")) if package else [target]:
                ferpipe_imports(file, seen)
    return seen


def covered(file: str, deps: set[str]) -> bool:
    """Whether `file` is a dep or lies in a folder that is one."""
    return any(file == d or file.startswith(d.rstrip("/") + "/") for d in deps)


def stage_definitions():
    for name, stage in STAGES.items():
        body = stage.get("do", stage)
        yield pytest.param(body, id=name)


@pytest.mark.parametrize("stage", list(stage_definitions()))
def test_stage_depends_on_its_script_and_every_module_it_imports(stage):
    script = stage["cmd"].split()[1]
    deps = {d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]}
    assert script in deps
    missing = {f for f in ferpipe_imports(ROOT / script) if not covered(f, deps)}
    assert not missing, f"{script} imports {sorted(missing)}, not listed in its deps"


def test_every_stage_declares_no_params_it_does_not_have():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, stage in STAGES.items():
        for key in stage.get("do", stage).get("params", []):
            node = params
            for part in key.replace("${item}", params["models"][0]).split("."):
                assert part in node, f"stage {name} declares unknown param {key}"
                node = node[part]
