"""Question keys and what may be cached: the edges of a question, and surrogates."""

from __future__ import annotations

from guest_queue.core.answers.cache import cacheable, question_key


def test_spaces_left_at_the_edges_by_punctuation_are_dropped_too() -> None:
    assert question_key("¿ What is DNA ?") == "what is dna"
    assert question_key("« what is dna »") == question_key("what is dna")


def test_a_question_with_a_lone_surrogate_is_never_shared() -> None:
    assert cacheable("what is dna")
    assert not cacheable("what is dna \ud800")
    assert not cacheable("\udfff what is dna")


def test_a_question_with_a_private_use_character_is_never_shared() -> None:
    # A private-use character means whatever the guest's font says: not the same question.
    assert not cacheable("what is dna \ue000")
    assert not cacheable("\U000f0000 what is dna")
