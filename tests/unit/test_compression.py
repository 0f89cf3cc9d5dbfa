"""compression.extractive: which sentences of a prompt's context are kept, and what is
never touched. The vectors here are bags of words over a small vocabulary, so which
sentence is closest to the question is plain to read; the real embedder is exercised in
tests/e2e/test_prompt_compression.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from compression.extractive import (
    CompressionSpec,
    choose_sentences,
    compress_request,
    question_parts,
    sentences,
    split_question,
)
from intake.compress_option import CompressOption, tag_compressions
from intake.limits import IntakeLimits
from intake.schema import JobRequest
from intake.service import jobs_for_requests
from penny.settings import Settings

VOCABULARY = ("budget", "million", "city", "oslo", "weather", "lunch", "coffee", "meeting")


def bag_of_words(texts: Sequence[str]) -> list[np.ndarray]:
    vectors = []
    for text in texts:
        words = text.lower().replace(".", " ").replace("?", " ").split()
        vector = np.array([words.count(w) for w in VOCABULARY], dtype=np.float32) + 0.01
        vectors.append(vector / np.linalg.norm(vector))
    return vectors


FILLER = ["The weather was mild and the coffee was good.",
          "Lunch was served at noon in the meeting room.",
          "Everyone enjoyed the coffee after lunch.",
          "The meeting ran late because of the weather."]
FACT = "The budget is four million crowns."


def test_sentences_keep_their_separators() -> None:
    found, separators = sentences("One. Two!  Three?\nFour\n\nFive.")
    assert found == ["One.", "Two!", "Three?", "Four", "Five."]
    assert separators == [" ", "  ", "\n", "\n\n", ""]


def test_the_question_and_an_introduction_are_split_off() -> None:
    head, context, question = split_question("Read this:\nA. B. C.\nWhat is A?")
    assert (head, context, question) == ("Read this:\n", "A. B. C.\n", "What is A?")
    assert split_question("No question here. Just text.") == (
        "", "No question here. Just text.", "")


def test_the_sentences_closest_to_the_question_are_kept_in_their_order() -> None:
    texts = [*FILLER[:2], FACT, *FILLER[2:]]
    vectors = np.stack(bag_of_words(texts))
    question = bag_of_words(["What is the budget in million?"])[0]
    kept = choose_sentences(vectors, question, [len(t) for t in texts], budget=60)
    assert 2 in kept and kept == sorted(kept)
    assert sum(len(texts[i]) for i in kept) <= 60


def test_a_question_asking_for_several_things_is_matched_part_by_part() -> None:
    question = "Say who leads the project, where its team is based, its budget and the month."
    assert question_parts(question) == [question, "Say who leads the project",
                                        "where its team is based", "its budget",
                                        "the month"]
    # A sentence that answers one part scores as well as one close to that part alone.
    texts = [*FILLER, FACT]
    vectors = np.stack(bag_of_words(texts))
    parts = np.stack(bag_of_words(["Tell me about the coffee and lunch meeting weather",
                                   "the budget in million"]))
    kept = choose_sentences(vectors, parts, [len(t) for t in texts], budget=len(FACT))
    assert kept == [len(FILLER)]


def test_the_best_sentence_is_kept_even_when_none_fits() -> None:
    vectors = np.stack(bag_of_words(FILLER))
    assert len(choose_sentences(vectors, None, [len(t) for t in FILLER], budget=1)) == 1


def chat(context: str, question: str) -> dict[str, Any]:
    return {"sampling": {"max_tokens": 8},
            "messages": [{"role": "system", "content": "Be brief. " * 30},
                         {"role": "user", "content": f"Report:\n{context}\n{question}"}]}


def test_a_long_context_is_cut_and_the_system_prompt_and_question_are_not() -> None:
    context = " ".join([*FILLER, FACT, *FILLER] * 3)
    question = "What is the budget?"
    request = chat(context, question)
    done = compress_request(request, CompressionSpec(ratio=0.3, min_context_chars=100),
                            bag_of_words)
    assert done.changed and done.kept_chars <= 0.3 * done.context_chars
    system, user = done.request["messages"]
    assert system == request["messages"][0]
    assert user["content"].startswith("Report:\n") and user["content"].endswith(
        f"\n{question}")
    assert FACT in user["content"]
    assert request["messages"][1]["content"].count("coffee") > user["content"].count("coffee")


def test_a_short_context_runs_as_written() -> None:
    request = chat(" ".join(FILLER), "What is the budget?")
    done = compress_request(request, CompressionSpec(ratio=0.3, min_context_chars=10_000),
                            bag_of_words)
    assert not done.changed and done.request is request


def test_a_plain_prompt_with_no_question_keeps_its_most_central_sentences() -> None:
    request = {"sampling": {"max_tokens": 8}, "prompt": " ".join([*FILLER, FACT])}
    done = compress_request(request, CompressionSpec(ratio=0.5, min_context_chars=0),
                            bag_of_words)
    assert done.changed and FACT not in done.request["prompt"]


def test_compression_is_stored_only_when_asked_for() -> None:
    plain = JobRequest.model_validate({"prompt": "hi"}).engine_request()
    assert "compress" not in plain
    asked = JobRequest.model_validate({"prompt": "hi", "compress": {"ratio": 0.4}})
    assert asked.engine_request()["compress"] == {"ratio": 0.4, "min_context_chars": 2000}


@pytest.mark.parametrize("option", [{"ratio": 0.01}, {"ratio": "0.5"}, {"rate": 0.5},
                                    {"min_context_chars": -1}])
def test_a_bad_compress_option_is_refused(option: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="compress"):
        JobRequest.model_validate({"prompt": "hi", "compress": option})


SUMMARIES_AT_40 = IntakeLimits(
    models=frozenset({"m"}), default_model="m", max_output_tokens=256, max_prompt_chars=10_000,
    tag_compression=tag_compressions({"feature=summaries": CompressOption(ratio=0.4),
                                      "compress_me": CompressOption(ratio=0.7)}))


def _stored_compress(body: dict[str, Any]) -> Any:
    request = JobRequest.model_validate(body)
    (job,) = jobs_for_requests([request], SUMMARIES_AT_40)
    return job.request.get("compress")


def test_a_tag_policy_compresses_the_jobs_of_its_tag_that_ask_nothing() -> None:
    plain = {"messages": [{"role": "user", "content": "Summarise this."}]}
    assert _stored_compress({**plain, "metadata": {"feature": "summaries"}}) == {
        "ratio": 0.4, "min_context_chars": 2000}
    # The first matching policy, in the order written, wins.
    assert _stored_compress({**plain, "metadata": {"feature": "summaries",
                                                   "compress_me": True}})["ratio"] == 0.4
    assert _stored_compress({**plain, "metadata": {"compress_me": 1}})["ratio"] == 0.7
    # Another value of the tag, or no tag: nothing is compressed.
    assert _stored_compress({**plain, "metadata": {"feature": "faq"}}) is None
    assert _stored_compress(plain) is None
    # The job's own option wins over the policy.
    assert _stored_compress({**plain, "metadata": {"feature": "summaries"},
                             "compress": {"ratio": 0.8}})["ratio"] == 0.8


def test_a_tag_compression_policy_is_read_from_settings_and_needs_a_key() -> None:
    settings = Settings(tag_compression={"feature=summaries": {"ratio": 0.5}})
    assert settings.tag_compression["feature=summaries"] == CompressOption(ratio=0.5)
    with pytest.raises(ValidationError, match="tag_compression tag needs a metadata key"):
        Settings(tag_compression={"=summaries": {"ratio": 0.5}})
    with pytest.raises(ValidationError):
        Settings(tag_compression={"feature": {"ratio": 2.0}})
