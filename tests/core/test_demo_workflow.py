"""The built-in assistant: real answers in two languages, honest when it does not know.

The app's own knowledge is neutral (about the demo itself); a site gives its own with
the ``knowledge`` option, as the genestory project does with GeneStory's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from genestory.assistant import KNOWLEDGE as GENESTORY
from guest_queue.workflows.base import WorkflowRequest
from guest_queue.workflows.demo import DemoWorkflow, knowledge_base
from guest_queue.workflows.matching import detect_language, fold

#: Words of GeneStory's domain, which the app's own knowledge must not hold.
GENESTORY_WORDS = re.compile(r"genestory|genetic|\bgene|dna|saliva|medical|xét nghiệm gen", re.I)


def genestory() -> DemoWorkflow:
    return DemoWorkflow(knowledge=GENESTORY, token_delay=0)


@pytest.mark.parametrize("language", ["en", "vi"])
def test_the_apps_own_knowledge_is_about_the_demo_not_genestory(language: str) -> None:
    kb = knowledge_base(language)
    assert len(kb.entries) >= 10
    assert {"about", "queue", "setup"} <= {e.topic for e in kb.entries}
    texts = [kb.fallback, *kb.unanswerable_suggestions]
    texts += [t for e in kb.entries for t in (e.answer, *e.questions, *e.keywords)]
    assert not [t for t in texts if GENESTORY_WORDS.search(t)]


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is this demo?", "demo assistant of guest_queue"),
        ("How does the queue work?", "first-come, first-served"),
        ("how do i connect my own model", "OpenAIChatWorkflow"),
        ("Can I stop an answer?", "Stop button"),
        ("How do I change the page title?", "template_name"),
        ("Bản demo này là gì?", "trợ lý demo"),
        ("hang doi hoat dong nhu the nao", "đến trước được phục vụ trước"),
        ("Làm sao để kết nối mô hình của tôi?", "OpenAIChatWorkflow"),
    ],
)
def test_the_default_knowledge_answers_questions_about_the_demo(
    question: str, expected: str
) -> None:
    answer, suggestions = DemoWorkflow(token_delay=0).answer(question)
    assert expected in answer
    assert len(suggestions) == 3 and all(s.endswith("?") for s in suggestions)


def test_every_question_of_the_default_knowledge_finds_its_own_answer() -> None:
    workflow = DemoWorkflow(token_delay=0)
    for language in ("en", "vi"):
        for entry in workflow.knowledge_base(language).entries:
            for question in entry.questions:
                assert workflow.answer(question)[0] == entry.answer, question


def test_questions_lists_the_configured_knowledge_in_its_languages() -> None:
    neutral = DemoWorkflow(token_delay=0).questions()
    assert ("How does the queue work?", "en") in neutral
    assert ("Hàng đợi hoạt động như thế nào?", "vi") in neutral
    assert ("What is DNA?", "en") not in neutral
    assert ("What is DNA?", "en") in genestory().questions()
    assert ("Gen là gì?", "vi") in genestory().questions()


@pytest.mark.parametrize("language", ["en", "vi"])
def test_genestorys_knowledge_base_has_enough_real_entries(language: str) -> None:
    kb = knowledge_base(language, GENESTORY)
    assert len(kb.entries) >= 25
    answers = [e.answer for e in kb.entries]
    assert len(set(answers)) == len(answers)
    assert all(len(a.split()) >= 30 for a in answers)
    topics = {e.topic for e in kb.entries}
    assert {"basics", "sample", "turnaround", "report", "privacy", "pricing"} <= topics


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is GeneStory?", "genetic testing service"),
        ("  what is genestory ", "genetic testing service"),
        ("how long until I get my results?", "few weeks"),
        ("Can I eat before spitting in the tube?", "30 minutes"),
        ("Do you sell my DNA data to insurance companies?", "not sold"),
        ("How much does the test cost?", "can't give you prices"),
        ("Should I stop taking my medicine because of my results?", "can't give medical advice"),
        ("xét nghiệm gen là gì?", "định kiểu gen"),
        ("xet nghiem gen la gi", "định kiểu gen"),
        ("Bao lâu thì có kết quả?", "vài tuần"),
        ("bao lau thi co ket qua", "vài tuần"),
        ("Giá xét nghiệm bao nhiêu?", "không thể báo giá"),
        ("Tôi có thể xóa dữ liệu của mình không?", "yêu cầu xóa"),
    ],
)
def test_genestorys_questions_find_the_right_answer(question: str, expected: str) -> None:
    answer, suggestions = genestory().answer(question)
    assert expected in answer
    assert len(suggestions) == 3 and all(s.endswith("?") for s in suggestions)


@pytest.mark.parametrize(
    ("question", "language"),
    [
        ("What is the capital of France?", "en"),
        ("Thủ đô của Pháp là gì?", "vi"),
        ("What is genetic testing?", "en"),
    ],
)
def test_unrelated_questions_get_an_honest_answer(question: str, language: str) -> None:
    answer, suggestions = DemoWorkflow(token_delay=0).answer(question)
    assert answer == knowledge_base(language).fallback
    assert len(suggestions) == 3


def test_unrelated_questions_get_genestorys_honest_answer() -> None:
    answer, _ = genestory().answer("What is the capital of France?")
    assert answer == knowledge_base("en", GENESTORY).fallback


def test_language_detection_and_folding() -> None:
    assert detect_language("Dữ liệu của tôi") == "vi"
    assert detect_language("du lieu cua toi co duoc bao ve khong") == "vi"
    assert detect_language("Is my data safe?") == "en"
    assert fold("Đường Xét Nghiệm") == "duong xet nghiem"


async def test_stream_is_word_by_word_then_three_suggestions() -> None:
    workflow = genestory()
    items = [i async for i in workflow.stream(WorkflowRequest("id", "What is DNA?"))]
    chunks, final = items[:-1], items[-1]
    assert len(chunks) > 20 and all(isinstance(c, str) for c in chunks)
    assert "".join(str(c) for c in chunks).startswith("DNA (deoxyribonucleic acid)")
    assert isinstance(final, dict) and final["event"] == "workflow_complete"
    assert len(final["data"]["suggested_questions"]) == 3
    assert await workflow.is_available()


def write_knowledge(folder: Path, answer: str) -> None:
    for language in ("en", "vi"):
        entry = {"topic": "hours", "questions": ["When do you open?"], "keywords": ["open"]}
        raw = {
            "language": language,
            "fallback": "No idea.",
            "unanswerable_suggestions": ["When do you open?"],
            "entries": [{**entry, "answer": answer}],
        }
        (folder / f"{language}.json").write_text(json.dumps(raw), encoding="utf-8")


def test_the_knowledge_may_be_a_directory_of_the_site(tmp_path: Path) -> None:
    write_knowledge(tmp_path, "We open at nine.")
    workflow = DemoWorkflow(knowledge=str(tmp_path), token_delay=0)
    assert workflow.answer("When do you open?")[0] == "We open at nine."
    assert workflow.questions() == [("When do you open?", "en"), ("When do you open?", "vi")]
    assert DemoWorkflow.check({"knowledge": str(tmp_path)}) == []


def test_a_knowledge_that_cannot_be_read_is_a_check_error(tmp_path: Path) -> None:
    assert DemoWorkflow.check({}) == []
    assert DemoWorkflow.check({"knowledge": GENESTORY}) == []
    (tmp_path / "en.json").write_text("{}", encoding="utf-8")
    for bad in ("no_such_package.knowledge", str(tmp_path / "missing"), str(tmp_path), 5):
        (problem,) = DemoWorkflow.check({"knowledge": bad})
        assert problem.id == "E041" and "GUEST_WORKFLOW_OPTIONS" in problem.hint
