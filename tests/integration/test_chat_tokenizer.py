"""ChatTokenizer on the offline model's real tokenizer: encoding a prompt piece by piece
(cached between special tokens) gives exactly the tokenizer's own chat-template ids."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from penny.settings import Settings
from tests.support import MODELS_DIR
from workers.chat_tokenizer import ChatTokenizer
from workers.engine import GenerationRequest, Sampling
from workers.registry import model_source

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<file_sep>", "<|im_start", "|>"]
TEXT = st.lists(
    st.one_of(st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
              st.sampled_from(SPECIALS), st.sampled_from([" ", "\n", "  ", "\n\n", "\t"])),
    max_size=8,
).map("".join)
ROLES = st.sampled_from(["system", "user", "assistant"])


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    settings = Settings(models_dir=MODELS_DIR)
    return AutoTokenizer.from_pretrained(model_source(settings, settings.default_model))


def own_ids(tokenizer: Any, messages: list[tuple[str, str]]) -> list[int]:
    return list(tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in messages], add_generation_prompt=True,
        tokenize=True, return_dict=False))


def request(messages: list[tuple[str, str]]) -> GenerationRequest:
    return GenerationRequest(key="k", sampling=Sampling(max_tokens=1), messages=tuple(messages))


def test_the_offline_model_is_encoded_piece_by_piece(tokenizer: Any) -> None:
    assert ChatTokenizer(tokenizer).piecewise


@settings(deadline=None, max_examples=300, database=None)
@given(st.lists(st.tuples(ROLES, TEXT), min_size=1, max_size=4))
def test_piecewise_ids_equal_the_tokenizers_own(
    tokenizer: Any, messages: list[tuple[str, str]]
) -> None:
    chat = ChatTokenizer(tokenizer)
    assert chat.prompt_token_ids(request(messages)) == own_ids(tokenizer, messages)
    # Again, now that every piece is cached.
    assert chat.prompt_token_ids(request(messages)) == own_ids(tokenizer, messages)


def test_a_shared_system_prompt_is_reused_across_jobs(tokenizer: Any) -> None:
    chat = ChatTokenizer(tokenizer)
    system = "You are the support agent of a logistics company. " * 40
    for n in range(20):
        messages = [("system", system), ("user", f"Where is parcel {n}?")]
        assert chat.prompt_token_ids(request(messages)) == own_ids(tokenizer, messages)


TOOLS_TEMPLATE = ("{%- if tools %}<|im_start|>system\n<tools>{% for tool in tools %}"
                  "{{ tool | tojson }}{% endfor %}</tools><|im_end|>\n{%- endif %}"
                  "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
                  "{{ message['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n")
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


def test_offered_tools_reach_the_prompt_only_through_a_template_that_takes_them(
    tokenizer: Any,
) -> None:
    request = GenerationRequest(key="k", sampling=Sampling(max_tokens=4),
                                messages=(("user", "Weather in Oslo?"),), tools=(WEATHER,))
    offline = ChatTokenizer(tokenizer)
    assert not offline.takes_tools  # the offline model's template has no place for them
    tooled = copy.deepcopy(tokenizer)
    tooled.chat_template = TOOLS_TEMPLATE
    with_tools = ChatTokenizer(tooled)
    assert with_tools.takes_tools
    prompt = tooled.decode(with_tools.prompt_token_ids(request))
    assert "<tools>" in prompt and '"get_weather"' in prompt and "Weather in Oslo?" in prompt
