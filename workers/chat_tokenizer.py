"""Turning a job into the exact token ids the engine sees: the model's chat template
applied by the model's own tokenizer. The worker (to build token prompts) and the
coalescer (to group jobs by shared token prefix) use this one class, so the prefixes the
coalescer plans around are the prefixes vLLM's cache actually holds."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any

from penny.settings import Settings
from workers.engine import GenerationRequest, template_takes_tools
from workers.registry import model_source

PIECE_CACHE_SIZE = 4096
# Checked against the tokenizer's own chat-template encoding before pieces are trusted.
_PROBE = [
    {"role": "system", "content": "You are terse.\n\n Answer  in one line. <|x|> é 日本"},
    {"role": "user", "content": " What is 2+2?\n"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3 ?"},
]


class _PieceEncoder:
    """Encodes a rendered prompt piece by piece, caching each piece. A fast tokenizer
    splits text at its added (special) tokens before anything else, so the pieces between
    them encode independently; a system prompt that a thousand jobs share is then encoded
    once instead of a thousand times (the coalescer's biggest cost was this encoding)."""

    def __init__(self, tokenizer: Any, specials: dict[str, int]) -> None:
        self._tokenizer = tokenizer
        self._specials = specials
        longest_first = sorted(specials, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(s) for s in longest_first) + ")")
        self._cache: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()  # the coalescer and the worker share one instance

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> _PieceEncoder | None:
        """None when splitting is not provably the tokenizer's own behaviour: added tokens
        that strip spaces, match whole words only or are normalized, or a probe that does
        not encode exactly as the tokenizer's chat template does."""
        added = getattr(tokenizer, "added_tokens_decoder", None)
        if not added:
            return None
        specials: dict[str, int] = {}
        for token_id, token in added.items():
            if token.lstrip or token.rstrip or token.single_word or token.normalized:
                return None
            specials[str(token.content)] = int(token_id)
        encoder = cls(tokenizer, specials)
        try:
            expected = list(tokenizer.apply_chat_template(
                _PROBE, add_generation_prompt=True, tokenize=True, return_dict=False))
            rendered = tokenizer.apply_chat_template(_PROBE, add_generation_prompt=True,
                                                     tokenize=False)
        except Exception:  # no chat template, or one that rejects the probe's roles
            return None
        return encoder if encoder.encode(rendered) == expected else None

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self._split.split(text):
            if not piece:
                continue
            special = self._specials.get(piece)
            if special is not None:
                ids.append(special)
            else:
                ids.extend(self._piece(piece))
        return ids

    def _piece(self, piece: str) -> tuple[int, ...]:
        with self._lock:
            cached = self._cache.get(piece)
            if cached is not None:
                self._cache.move_to_end(piece)
                return cached
        encoded = tuple(self._tokenizer.encode(piece, add_special_tokens=False))
        with self._lock:
            self._cache[piece] = encoded
            if len(self._cache) > PIECE_CACHE_SIZE:
                self._cache.popitem(last=False)
        return encoded


class ChatTokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._pieces = _PieceEncoder.for_tokenizer(tokenizer)

    @property
    def piecewise(self) -> bool:
        """Whether prompts are encoded piece by piece with a cache (else whole, each time)."""
        return self._pieces is not None

    @classmethod
    def for_model(cls, settings: Settings, model: str) -> ChatTokenizer:
        """Loads only the tokenizer files (no weights, no engine)."""
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(model_source(settings, model)))

    @property
    def takes_tools(self) -> bool:
        """Whether the model's chat template has a place for tools."""
        return template_takes_tools(getattr(self._tokenizer, "chat_template", None))

    def prompt_token_ids(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None and request.tools:
            conversation = [{"role": r, "content": c} for r, c in request.messages]
            return list(self._tokenizer.apply_chat_template(
                conversation, tools=list(request.tools), add_generation_prompt=True,
                tokenize=True, return_dict=False))
        if request.messages is not None:
            conversation = [{"role": r, "content": c} for r, c in request.messages]
            if self._pieces is not None:
                rendered = self._tokenizer.apply_chat_template(
                    conversation, add_generation_prompt=True, tokenize=False)
                return self._pieces.encode(rendered)
            ids = self._tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            return list(ids)
        return list(self._tokenizer.encode(request.prompt or ""))
