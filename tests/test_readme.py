"""The README as a newcomer uses it: the two set-up commands come first and are what they must
be, and every file of the repository it points at exists."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# Paths into the repository as the README writes them: in backticks or as link targets.
REPO_PATH = re.compile(
    r"(?:`|\]\()((?:bench|contrib|deploy|docs|provisioner|scripts|sql|tests)/[\w./*-]*\w|LICENSE)"
)


def test_the_first_two_commands_set_up_run_and_test() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert blocks[0].strip() == (
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && provisioner serve"
    )
    assert blocks[1].strip() == "./scripts/test"
    assert os.access(ROOT / "scripts" / "test", os.X_OK)


def test_every_repository_path_the_readme_names_exists() -> None:
    named = set(REPO_PATH.findall(README))
    assert {"LICENSE", "deploy/provisioner.service", "bench/README.md"} <= named, named
    missing = sorted(path for path in named if not list(ROOT.glob(path)))
    assert missing == []
