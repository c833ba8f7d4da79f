"""The demo project brings GeneStory's assistant; the app it mounts ships a neutral one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genestory.assistant import KNOWLEDGE
from genestory.assistant.prompts import SYSTEM_PROMPT
from genestory.settings import DEMO_WORKFLOW, OPENAI_WORKFLOW, genestory_assistant

ROOT = Path(__file__).resolve().parent.parent


def project_options(**env: str) -> object:
    """GUEST_WORKFLOW_OPTIONS as genestory.settings builds them from ``env`` alone."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GUEST_")}
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        "print(json.dumps(settings.GUEST_WORKFLOW_OPTIONS))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "genestory.settings", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_make_run_answers_from_genestorys_knowledge() -> None:
    assert project_options() == {"knowledge": KNOWLEDGE}
    assert project_options(GUEST_WORKFLOW_OPTIONS='{"token_delay": 0}') == {
        "knowledge": KNOWLEDGE,
        "token_delay": 0,
    }


@pytest.mark.parametrize(
    ("workflow", "options", "expected"),
    [
        (DEMO_WORKFLOW, {}, {"knowledge": KNOWLEDGE}),
        (DEMO_WORKFLOW, {"knowledge": "x.y"}, {"knowledge": "x.y"}),
        (OPENAI_WORKFLOW, {"model": "m"}, {"model": "m", "system_prompt": SYSTEM_PROMPT}),
        (OPENAI_WORKFLOW, {"system_prompt": ""}, {"system_prompt": SYSTEM_PROMPT}),
        (OPENAI_WORKFLOW, {"system_prompt": "Be brief."}, {"system_prompt": "Be brief."}),
        ("mysite.Other", {"a": 1}, {"a": 1}),
        (DEMO_WORKFLOW, "not a dict", "not a dict"),  # left for guest_queue.E040
    ],
)
def test_genestorys_assistant_fills_only_what_the_options_leave_out(
    workflow: str, options: object, expected: object
) -> None:
    assert genestory_assistant(workflow, options) == expected


def test_the_openai_workflow_gets_genestorys_prompt_from_the_environment() -> None:
    options = project_options(GUEST_WORKFLOW=OPENAI_WORKFLOW, GUEST_OPENAI_MODEL="m")
    assert options == {"model": "m", "system_prompt": SYSTEM_PROMPT}
    assert "GeneStory" in SYSTEM_PROMPT
