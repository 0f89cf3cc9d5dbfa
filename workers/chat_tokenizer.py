"""Turning a job into the exact token ids the engine sees: the model's chat template
applied by the model's own tokenizer. The worker (to build token prompts) and the
coalescer (to group jobs by shared token prefix) use this one class, so the prefixes the
coalescer plans around are the prefixes vLLM's cache actually holds."""

from __future__ import annotations

from typing import Any

from penny.settings import Settings
from workers.engine import GenerationRequest
from workers.registry import model_source


class ChatTokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    @classmethod
    def for_model(cls, settings: Settings, model: str) -> ChatTokenizer:
        """Loads only the tokenizer files (no weights, no engine)."""
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(model_source(settings, model)))

    def prompt_token_ids(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            conversation = [{"role": r, "content": c} for r, c in request.messages]
            ids = self._tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            return list(ids)
        return list(self._tokenizer.encode(request.prompt or ""))
