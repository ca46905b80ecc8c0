"""The tutorial (docs/tutorial.md and its Korean version) cannot silently rot: every
`vaekit ...` line of its ```bash blocks and every ```python block runs, in order, in one
folder, with VAEKIT_MAX_EPOCHS=1 (every `vaekit train` at most one epoch) and `vaekit train`,
`evaluate` and `diagnose` estimating with K = 10 importance samples (a flag given last
wins); both files hold the same commands, and every figure they show exists and is made by
docs/make_figures.sh."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

DOCS = ROOT / "docs"
FILES = [DOCS / "tutorial.md", DOCS / "tutorial.ko.md"]
# appended to the page's commands: the test checks that they run, not what K they print
QUICK = {"train": ["--quiet", "--importance-samples", "10"],
         "evaluate": ["--importance-samples", "10"],
         "diagnose": ["--importance-samples", "10", "--ood-samples", "10"]}


def blocks(path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def commands(path) -> list[str]:
    return [line.strip() for b in blocks(path, "bash") for line in b.splitlines()
            if line.strip().startswith("vaekit ")]


def figures(path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", path.read_text(encoding="utf-8"))


def test_both_languages_show_the_same_commands_code_and_figures():
    en, ko = FILES
    assert commands(en) and commands(en) == commands(ko)
    assert blocks(en, "python") == blocks(ko, "python")
    assert figures(en) == figures(ko)
    script = (DOCS / "make_figures.sh").read_text()
    for fig in figures(en):
        assert (DOCS / fig).is_file(), fig
        assert f'"$f/{fig.split("/")[-1]}"' in script, f"{fig} is not made by docs/make_figures.sh"


def test_every_command_and_python_block_runs(tmp_path, data_dir):
    env = dict(os.environ, VAEKIT_MAX_EPOCHS="1", VAEKIT_DATA_DIR=str(data_dir))
    path = FILES[0]
    text = path.read_text(encoding="utf-8")
    # the page's order: bash commands and python blocks as they come
    steps = re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S)
    ran, printed = 0, ""
    for language, body in steps:
        if language == "python":
            res = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, (body, res.stderr[-2000:])
            printed += res.stdout
            ran += 1
            continue
        for line in body.splitlines():
            line = line.strip()
            if not line.startswith("vaekit "):
                continue
            argv = line.split()[1:]
            if argv[0] in QUICK:
                argv += QUICK[argv[0]]
            res = subprocess.run([sys.executable, "-m", "vaekit", *argv], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, (line, res.stderr[-2000:])
            ran += 1
    assert ran == len(commands(path)) + len(blocks(path, "python"))
    assert (tmp_path / "runs" / "cvae" / "report.html").is_file()
    norm = re.search(r"encoder gradient norm: ([0-9.e+-]+)", printed)
    assert norm and float(norm.group(1)) > 0  # the reparameterised sample carries the gradient


@pytest.mark.parametrize("value", ["0", "x"])
def test_max_epochs_variable_is_checked(tmp_path, value):
    res = subprocess.run([sys.executable, "-m", "vaekit", "train", "--data", "digits", "--out",
                          str(tmp_path / "r")], env=dict(os.environ, VAEKIT_MAX_EPOCHS=value),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "VAEKIT_MAX_EPOCHS" in res.stderr
    assert not (tmp_path / "r").exists()
