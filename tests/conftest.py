"""Test isolation: only the first-party plugins are visible unless a test asks for more."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

FIRST_PARTY = "core,benchmarks,baselines,videofirst,vimpac,captioner"
os.environ["VFEVAL_PLUGINS"] = FIRST_PARTY
os.environ.pop("VFEVAL_STRICT_PLUGINS", None)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "benchmarks"


@pytest.fixture
def host():
    from vfeval.plugins import get_plugin_manager

    return get_plugin_manager()


@pytest.fixture
def ego_answers_root(tmp_path: Path) -> Path:
    """EgoSchema-format root with the REAL 500 public answers, placeholder questions and no videos."""
    answers = SHARED / "egoschema" / "subset_answers.json"
    if not answers.exists():
        pytest.skip("shared benchmark files not available")
    root = tmp_path / "egoschema"
    (root / "videos").mkdir(parents=True)
    shutil.copy(answers, root / "subset_answers.json")
    uids = list(json.loads(answers.read_text()))
    questions = [
        {"q_uid": q, "google_drive_id": "", "question": f"What is c doing in clip {i}?",
         **{f"option {k}": f"c does thing {k}" for k in range(5)}}
        for i, q in enumerate(uids)
    ]
    (root / "questions.json").write_text(json.dumps(questions))
    return root
