"""What an answer must look like: `response_format` (text, JSON object, JSON schema) and
penny's `guided` extension (a regex or a choice list). Pure.

The worker hands the constraint to the engine's guided decoding, so the answer matches it
token by token instead of being asked for nicely in the prompt. Everything that can be
checked without the engine is checked here, so a bad schema is a 422 or a line error, not
a failed job; the engine still refuses, per job, a schema feature its grammar backend
cannot compile (`invalid_request` naming the reason).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, JsonValue, Strict, field_validator
from pydantic_core import PydanticCustomError

from intake.text import StorableText, unstorable_paths

# A schema is compiled into a grammar for every job that carries it; the cap keeps one
# request from making that (and its stored copy on every job row) arbitrarily large.
MAX_SCHEMA_CHARS = 16_000
MAX_REGEX_CHARS = 1_000
MAX_CHOICES = 64
MAX_CHOICE_CHARS = 500
# The hosted API's rule for a json_schema name.
SCHEMA_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["json_object"]


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SCHEMA_NAME_PATTERN)
    # `schema` shadows a BaseModel attribute, hence the alias.
    schema_: dict[StorableText, JsonValue] = Field(alias="schema")
    description: StorableText | None = Field(default=None, max_length=2000)
    # Accepted for compatibility. penny always decodes under the schema, so an answer
    # matches it whether strict is true or not (unless max_tokens cuts it short).
    strict: Annotated[bool, Strict()] | None = None

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict[str, JsonValue]) -> dict[str, JsonValue]:
        for path, reason in unstorable_paths(schema):
            raise PydanticCustomError("unstorable_text", "{path}: {reason}",
                                      {"path": path, "reason": reason})
        size = len(_compact(schema))
        if size > MAX_SCHEMA_CHARS:
            raise PydanticCustomError(
                "schema_too_large", "the schema is {size} characters as compact JSON; "
                "the limit is {limit}", {"size": size, "limit": MAX_SCHEMA_CHARS})
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as error:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise PydanticCustomError(
                "invalid_json_schema", "not a valid JSON Schema at {where}: {reason}",
                {"where": where, "reason": error.message[:300]}) from None
        return schema


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat,
                           Field(discriminator="type")]


Choice = Annotated[StorableText, Field(min_length=1, max_length=MAX_CHOICE_CHARS)]


class Guided(BaseModel):
    """penny's extension: the answer is exactly one of `choice`, or matches `regex` in full."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    regex: StorableText | None = Field(default=None, min_length=1, max_length=MAX_REGEX_CHARS)
    choice: list[Choice] | None = Field(default=None, min_length=1, max_length=MAX_CHOICES)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str | None) -> str | None:
        # Python's dialect is close to what the grammar backends read; a pattern it cannot
        # compile is wrong everywhere. (One it can compile may still use a feature the
        # engine's backend lacks, such as lookbehind: that job fails alone, named.)
        if regex is not None:
            try:
                re.compile(regex)
            except re.error as error:
                raise PydanticCustomError("invalid_regex", "not a valid regex: {reason}",
                                          {"reason": str(error)}) from None
        return regex

    def constraint(self) -> dict[str, Any]:
        if (self.regex is None) == (self.choice is None):
            raise ValueError("guided takes exactly one of 'regex' or 'choice'")
        if self.regex is not None:
            return {"regex": self.regex}
        assert self.choice is not None
        if len(set(self.choice)) != len(self.choice):
            raise ValueError("guided.choice holds the same string twice")
        return {"choice": list(self.choice)}


def field_path(location: tuple[object, ...]) -> tuple[object, ...]:
    """A validation error's location without the union tag pydantic inserts after
    `response_format` (`response_format.json_schema.json_schema.schema` reads as the
    field the client wrote, `response_format.json_schema.schema`). The `[key]` marker after
    a bad dict key stays: it says the key, not its value, is wrong."""
    path = location
    if len(path) > 1 and path[0] == "response_format" and path[1] in (
            "text", "json_object", "json_schema"):
        return (path[0], *path[2:])
    return path


def output_constraint(response_format: TextFormat | JsonObjectFormat | JsonSchemaFormat | None,
                      guided: Guided | None) -> dict[str, Any] | None:
    """The stored form the worker turns into guided decoding, or None for free text.

    Exactly one kind: `{"json_schema": "<schema as JSON text>"}`, `{"json_object": true}`,
    `{"regex": "..."}` or `{"choice": [...]}`. Raises ValueError when both a JSON format
    and `guided` are given.
    """
    structured = isinstance(response_format, JsonObjectFormat | JsonSchemaFormat)
    if guided is not None:
        if structured:
            raise ValueError("give either a JSON response_format or guided, not both")
        return guided.constraint()
    if isinstance(response_format, JsonSchemaFormat):
        # As JSON text: a JSONB object would come back with its keys re-sorted, and the
        # order of `properties` is the order the answer's fields are generated in.
        return {"json_schema": json.dumps(response_format.json_schema.schema_,
                                          separators=(",", ":"), ensure_ascii=False)}
    if isinstance(response_format, JsonObjectFormat):
        return {"json_object": True}
    return None
