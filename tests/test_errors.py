"""A failing or interrupted stage: one line, its exit code, none of its outputs left behind;
and the files it does write get the permissions the umask gives."""

import os
import signal
import subprocess
import sys

import pytest

from ferpipe import dataset
from ferpipe.errors import FerError, exits_cleanly

from .conftest import ROOT


def test_written_files_get_the_umask_permissions_not_mkstemps_0600(tmp_path):
    mask = os.umask(0o022)
    try:
        dataset.write_json({"a": 1}, tmp_path / "out.json")
    finally:
        os.umask(mask)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644


def test_a_stage_that_fails_after_writing_leaves_none_of_its_outputs(tmp_path, capsys):
    @exits_cleanly
    def stage() -> None:
        dataset.write_json({"a": 1}, tmp_path / "first.json")
        raise FerError("the second output cannot be made")

    with pytest.raises(SystemExit) as exit_:
        stage()
    assert exit_.value.code == 2 and not (tmp_path / "first.json").exists()
    assert capsys.readouterr().err == "error: the second output cannot be made\n"


INTERRUPTIBLE = """
import signal, sys, time
from pathlib import Path
from ferpipe import dataset
from ferpipe.errors import exits_cleanly

# A terminal's Ctrl-C: a child of a background job starts with SIGINT ignored, so restore it.
signal.signal(signal.SIGINT, signal.default_int_handler)

@exits_cleanly
def stage():
    dataset.write_json({"done": 1}, Path(sys.argv[1]) / "first.json")
    with dataset.atomic_path(Path(sys.argv[1]) / "second.bin") as tmp:
        tmp.write_bytes(b"half")
        print("ready", flush=True)
        time.sleep(60)

stage()
"""


def test_ctrl_c_ends_a_stage_with_one_line_exit_130_and_no_output(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE, str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert child.stdout.readline() == "ready\n"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)  # well before the child's 60 s sleep ends
    assert child.returncode == 130
    assert err == "error: interrupted; this stage wrote no output\n"
    assert list(tmp_path.iterdir()) == []  # neither the finished file nor the temporary one
