"""docs/extending.md's worked example stays runnable: its files are written as the page shows
them into a temporary folder, and its commands train with them - a single run and a
population of three - from the command line, as a user would (with a small budget added)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from helpers import REPO, TINY, read_metrics, run_cli

PAGE = REPO / "docs" / "extending.md"
FILE = re.compile(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", re.S)
COMMAND = re.compile(r"<!-- command -->\n```bash\n(.*?)```", re.S)


def page_example(root: Path) -> list[list[str]]:
    """Write the page's files under ``root``; return its commands' arguments after ``-m ppo_research``."""
    text = PAGE.read_text()
    files = FILE.findall(text)
    assert files, "the page shows no files"
    for name, body in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    commands = []
    for line in COMMAND.findall(text):
        words = shlex.split(line.strip())
        assert words[:4] == ["PYTHONPATH=.", "python", "-m", "ppo_research"], words
        commands.append(words[4:])
    return commands


def test_a_new_loss_in_a_file_and_a_yaml_trains_solo_and_as_a_population(tmp_path):
    single, population = page_example(tmp_path)
    env = {"PYTHONPATH": str(tmp_path)}
    solo = run_cli([*single, "logger=none", *TINY, f"hydra.run.dir={tmp_path / 'solo'}"], cwd=tmp_path, env=env)
    assert solo.returncode == 0, solo.stderr[-3000:]
    assert len(read_metrics(tmp_path / "solo")) == 2
    assert "AsymmetricClipLoss" in (tmp_path / "solo" / "run.json").read_text()

    sweep = tmp_path / "sweep"
    pop = run_cli([*population, "logger=none", *TINY, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env)
    assert pop.returncode == 0, pop.stderr[-3000:]
    assert "population 0: jobs 0, 1, 2" in pop.stdout + pop.stderr  # the three seeds, one stacked update
    for job in "012":
        assert len(read_metrics(sweep / job)) == 2

    bad = run_cli([*single, "loss.eps_low=1.5", "logger=none", *TINY], cwd=tmp_path, env=env)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: loss.eps_low=1.5 is invalid: expected a value in (0, 1)"
