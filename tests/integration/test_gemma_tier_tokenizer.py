"""The Gemma 3 270M base model as penny prepares it (`offline:gemma3-270m`): every prompt
starts with exactly one `<bos>` (without it Gemma answers garbage), chat jobs are written
in the documented Question/Answer format, and an answer ends at a line break."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from penny.settings import OFFLINE_GEMMA_MODEL_NAME, OFFLINE_GEMMA_SOURCE, Settings
from tests.support import MODELS_DIR
from workers.chat_tokenizer import ChatTokenizer
from workers.engine import GenerationRequest, Sampling
from workers.gemma_prep import prepare_gemma_model

CONVERSATION = (("system", "Answer briefly."), ("user", " What is 2 + 2?\n"),
                ("assistant", "4"), ("user", "And 3 + 3?"))


@pytest.fixture(scope="module")
def gemma_dir() -> Path:
    return prepare_gemma_model(MODELS_DIR)


@pytest.fixture(scope="module")
def tokenizer(gemma_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gemma_dir)


def chat_ids(messages: tuple[tuple[str, str], ...]) -> list[int]:
    """Through penny's own path: the served name, the registry, the chat tokenizer."""
    settings = Settings(models={OFFLINE_GEMMA_MODEL_NAME: OFFLINE_GEMMA_SOURCE},
                        default_model=OFFLINE_GEMMA_MODEL_NAME, models_dir=MODELS_DIR)
    chat = ChatTokenizer.for_model(settings, OFFLINE_GEMMA_MODEL_NAME)
    return chat.prompt_token_ids(
        GenerationRequest(key="k", sampling=Sampling(max_tokens=1), messages=messages))


def test_a_plain_prompt_starts_with_one_bos(tokenizer: Any) -> None:
    ids = tokenizer.encode("The capital of France is")
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == "The capital of France is"


def test_a_chat_job_is_one_bos_then_questions_and_answers(tokenizer: Any) -> None:
    ids = chat_ids(CONVERSATION)
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids[1:]) == ("Answer briefly.\n\nQuestion: What is 2 + 2?\n"
                                         "Answer: 4\n\nQuestion: And 3 + 3?\nAnswer:")
    own = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in CONVERSATION],
                                        add_generation_prompt=True, tokenize=True,
                                        return_dict=False)
    assert ids == list(own)


def test_an_answer_ends_at_a_line_break(gemma_dir: Path, tokenizer: Any) -> None:
    from transformers import GenerationConfig

    ends = set(GenerationConfig.from_pretrained(gemma_dir).eos_token_id)
    assert tokenizer.eos_token_id in ends
    for text in ("\n", "\n\n", ".\n"):
        for token in tokenizer.encode(text, add_special_tokens=False):
            if "\n" in tokenizer.decode([token]):
                assert token in ends, (text, token)
    assert not ends & set(tokenizer.encode("Paris is the capital", add_special_tokens=False))

