"""The built-in assistant: real answers in two languages, honest when it does not know."""

from __future__ import annotations

import pytest

from guest_queue.workflows.base import WorkflowRequest
from guest_queue.workflows.demo import DemoWorkflow, knowledge_base
from guest_queue.workflows.matching import detect_language, fold


@pytest.mark.parametrize("language", ["en", "vi"])
def test_knowledge_base_has_enough_real_entries(language: str) -> None:
    kb = knowledge_base(language)
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
def test_questions_find_the_right_answer(question: str, expected: str) -> None:
    answer, suggestions = DemoWorkflow(token_delay=0).answer(question)
    assert expected in answer
    assert len(suggestions) == 3 and all(s.endswith("?") for s in suggestions)


@pytest.mark.parametrize(
    ("question", "language"),
    [("What is the capital of France?", "en"), ("Thủ đô của Pháp là gì?", "vi")],
)
def test_unrelated_questions_get_an_honest_answer(question: str, language: str) -> None:
    answer, suggestions = DemoWorkflow(token_delay=0).answer(question)
    assert answer == knowledge_base(language).fallback
    assert len(suggestions) == 3


def test_language_detection_and_folding() -> None:
    assert detect_language("Dữ liệu của tôi") == "vi"
    assert detect_language("du lieu cua toi co duoc bao ve khong") == "vi"
    assert detect_language("Is my data safe?") == "en"
    assert fold("Đường Xét Nghiệm") == "duong xet nghiem"


async def test_stream_is_word_by_word_then_three_suggestions() -> None:
    workflow = DemoWorkflow(token_delay=0)
    items = [i async for i in workflow.stream(WorkflowRequest("id", "What is DNA?"))]
    chunks, final = items[:-1], items[-1]
    assert len(chunks) > 20 and all(isinstance(c, str) for c in chunks)
    assert "".join(str(c) for c in chunks).startswith("DNA (deoxyribonucleic acid)")
    assert isinstance(final, dict) and final["event"] == "workflow_complete"
    assert len(final["data"]["suggested_questions"]) == 3
    assert await workflow.is_available()
