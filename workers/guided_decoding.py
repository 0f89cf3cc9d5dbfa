"""Guided decoding: a job's stored output constraint, and how vLLM is asked to honour it.

The constraint (see `intake.structured.output_constraint`) travels on the job row; it
becomes one more field of that job's own `SamplingParams`, so jobs with different schemas
(or none) still run in one `generate` call and share the prefix cache.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OutputConstraint:
    """Exactly one field is set."""

    json_schema: str | None = None  # the schema as JSON text, property order kept
    json_object: bool = False
    regex: str | None = None
    choice: tuple[str, ...] | None = None

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any] | None) -> OutputConstraint | None:
        if not stored:
            return None
        if "json_schema" in stored:
            return cls(json_schema=str(stored["json_schema"]))
        if stored.get("json_object"):
            return cls(json_object=True)
        if "regex" in stored:
            return cls(regex=str(stored["regex"]))
        if "choice" in stored:
            return cls(choice=tuple(str(c) for c in stored["choice"]))
        raise ValueError(f"unknown output constraint {sorted(stored)}")


# The engine-wide guided-decoding options (vLLM reads them per engine, not per request).
# JSON answers come compact: whitespace between tokens is output the job pays for and
# nobody reads, and the model left free indents every field. vLLM allows that only with a
# named backend, not with "auto" (xgrammar falling back to guidance): xgrammar is the one
# tried on CPU here; a constraint it cannot compile fails its job alone, named.
GUIDED_DECODING_CONFIG: dict[str, Any] = {"backend": "xgrammar",
                                          "disable_any_whitespace": True}


def structured_outputs_params(constraint: OutputConstraint) -> Any:
    """vLLM's `StructuredOutputsParams` for `constraint`."""
    from vllm.sampling_params import StructuredOutputsParams

    if constraint.json_schema is not None:
        # Parsed here, from the text stored at intake: property order is the order
        # fields are generated in, and JSONB would have re-sorted a stored object.
        return StructuredOutputsParams(json=json.loads(constraint.json_schema))
    if constraint.json_object:
        return StructuredOutputsParams(json_object=True)
    if constraint.regex is not None:
        return StructuredOutputsParams(regex=constraint.regex)
    return StructuredOutputsParams(choice=list(constraint.choice or ()))


def refusal(llm: Any, params: Any) -> str | None:
    """Why vLLM would refuse `params`, or None when it takes them.

    `LLM.generate` validates every request before running any and raises for the first
    bad one, which would fail the whole batch for one job's schema (a regex feature the
    grammar backend lacks, a logit_bias token id outside the vocabulary). Running the same
    check on a copy first lets that job fail alone. The copy matters: the check records
    the grammar backend it picked on the params, and a second check would then refuse them.
    """
    from vllm.exceptions import VLLMClientError

    processor = llm.llm_engine.input_processor
    try:
        copy.deepcopy(params).verify(processor.model_config, processor.speculative_config,
                                     processor.structured_outputs_config, processor.tokenizer)
    except (VLLMClientError, ValueError) as error:  # the request's fault, not the engine's
        return str(error)[:1000]  # stored on the job; a grammar dump can run long
    return None
