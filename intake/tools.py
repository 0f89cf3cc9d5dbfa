"""`tools`: function definitions a chat job offers the model (OpenAI's shape). Pure.

penny renders them into the prompt with the model's own chat template and reads tool
calls back out of the answer (`compat.tool_calls`). Whether a model can take tools is its
chat template's business: the worker refuses, per job and naming the model, a job with
tools for a model whose template has no place for them, since the tools would otherwise
be silently dropped from the prompt.
"""

from __future__ import annotations

from typing import Annotated, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, JsonValue, Strict, field_validator
from pydantic_core import PydanticCustomError

from intake.text import StorableText

MAX_TOOLS = 128  # the hosted API's limit
FUNCTION_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=FUNCTION_NAME_PATTERN)
    description: StorableText | None = Field(default=None, max_length=2000)
    parameters: dict[StorableText, JsonValue] | None = None
    strict: Annotated[bool, Strict()] | None = None

    @field_validator("parameters")
    @classmethod
    def _valid_schema(cls, schema: dict[str, JsonValue] | None
                      ) -> dict[str, JsonValue] | None:
        if schema is not None:
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as error:
                raise PydanticCustomError(
                    "invalid_json_schema", "not a valid JSON Schema: {reason}",
                    {"reason": error.message[:300]}) from None
        return schema


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["function"]
    function: FunctionSpec


Tools = Annotated[list[Tool], Field(min_length=1, max_length=MAX_TOOLS)]


def stored_tools(tools: list[Tool]) -> list[dict[str, object]]:
    """As the job row stores them and the chat template reads them."""
    return [tool.model_dump(exclude_none=True) for tool in tools]
