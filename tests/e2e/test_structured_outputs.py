"""Structured outputs end to end: one OpenAI batch whose lines each ask for a different
shape — two JSON schemas, a JSON object, a regex, a choice list, free text — runs as one
engine batch on the real vLLM engine, and every answer parses and validates against what
its line asked for."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from sqlalchemy import func, select

from api.app import create_app
from models.tables import Batch
from penny.runtime import Runtime
from tests.support import LiveServer, jsonl, openai_sdk, read_jsonl, wait_until
from workers.inprocess import InProcessPipeline
from workers.vllm_engine import VllmEngine

pytestmark = pytest.mark.engine

MODEL = "smollm2-135m-instruct"
# Shared by every line and long enough to fill whole prefix-cache blocks: lines with
# different constraints must still reuse it.
SYSTEM = ("You read short notes about people and answer questions about them exactly as "
          "asked. Use only facts from the note. Keep every answer short and plain. ") * 5
NOTE = "Note: Maria Lopez is 34 years old, lives in Madrid and loves her new job."
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "city": {"type": "string", "maxLength": 24},
        "mood": {"enum": ["happy", "sad", "neutral"]},
    },
    "required": ["name", "age", "city", "mood"],
    "additionalProperties": False,
}
LABEL = {
    "type": "object",
    "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]},
                   "confidence": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["sentiment", "confidence"],
    "additionalProperties": False,
}
YEAR = r"(19|20)[0-9]{2}"
CHOICES = ["Madrid", "Paris", "Rome"]


def line(custom_id: str, question: str, max_tokens: int = 96, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "max_tokens": max_tokens, "temperature": 0, **body,
                     "messages": [{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": f"{NOTE}\n{question}"}]}}


def schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema,
                                                   "strict": True}}


@pytest.fixture
def server(runtime: Runtime) -> Iterator[LiveServer]:
    with LiveServer(create_app(runtime)) as live:
        yield live


def test_every_line_answers_in_the_shape_it_asked_for(
    server: LiveServer, runtime: Runtime, engine: VllmEngine
) -> None:
    client = openai_sdk(server)
    lines = [
        line("person", "Give her name, age, city and mood as JSON.",
             response_format=schema_format("person", PERSON)),
        line("label", "How does she feel about her job? Answer as JSON.",
             response_format=schema_format("label", LABEL)),
        line("object", "Give her name and city as a JSON object.", max_tokens=64,
             response_format={"type": "json_object"}),
        line("year", "In which year might she have been born?", max_tokens=8,
             penny_guided={"regex": YEAR}),
        line("city", "Which city does she live in?", max_tokens=8,
             penny_guided={"choice": CHOICES}),
        line("free", "Where does she live?", max_tokens=16),
        # Python compiles a lookbehind, the grammar backend cannot: this line fails alone.
        line("lookbehind", "Anything.", max_tokens=8, penny_guided={"regex": "(?<=a)b"}),
    ]
    upload = client.files.create(file=("shapes.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    with InProcessPipeline(runtime, [engine]):
        wait_until(lambda: client.batches.retrieve(batch.id).status in {
            "completed", "failed", "cancelled", "expired"}, timeout=600,
            what="the batch to end", interval=0.5)
    ended = client.batches.retrieve(batch.id)
    assert ended.status == "completed"
    with runtime.sessions() as session:  # different constraints, one engine batch
        assert session.execute(select(func.count()).select_from(Batch)).scalar_one() == 1

    outputs = {o["custom_id"]: o["response"]["body"] for o in read_jsonl(
        client, ended.output_file_id)}
    errors = read_jsonl(client, ended.error_file_id)
    assert sorted(outputs) == ["city", "free", "label", "object", "person", "year"]
    assert [e["custom_id"] for e in errors] == ["lookbehind"]
    refused = errors[0]["response"]
    assert refused["status_code"] == 400
    assert refused["body"]["error"]["code"] == "invalid_request"
    assert "lookbehind" in refused["body"]["error"]["message"].lower()

    def answer(custom_id: str) -> tuple[str, str]:
        choice = outputs[custom_id]["choices"][0]
        return choice["message"]["content"], choice["finish_reason"]

    for custom_id, schema in (("person", PERSON), ("label", LABEL)):
        text, finish = answer(custom_id)
        assert finish == "stop", text  # the schema bounds the answer below max_tokens
        jsonschema.validate(json.loads(text), schema)
        assert list(json.loads(text)) == list(schema["properties"])  # the schema's order
        assert text == json.dumps(json.loads(text), separators=(",", ":"),
                                  ensure_ascii=False)  # compact: no paid-for whitespace
    text, finish = answer("object")
    if finish == "stop":
        assert isinstance(json.loads(text), dict), text
    else:  # a JSON object has no length bound: cut at max_tokens, and said so
        assert finish == "length" and outputs["object"]["usage"]["completion_tokens"] == 64
        assert text.startswith("{")
    text, finish = answer("year")
    assert re.fullmatch(YEAR, text) and finish == "stop", text
    text, finish = answer("city")
    assert text in CHOICES and finish == "stop", text
    assert answer("free")[0]  # free text is unconstrained

    cached = [outputs[c]["usage"]["prompt_tokens_details"]["cached_tokens"] for c in outputs]
    assert sum(1 for c in cached if c > 0) >= len(outputs) - 1, cached
