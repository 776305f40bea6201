"""The request bodies the services accept: OpenAI chat completions and Xinference's launch and registration
bodies. Pydantic validates them at the HTTP edge; range errors name the field and become 400s.

Unknown fields are ignored, as OpenAI-compatible servers do; fields that are known but not supported are declared
here so the chat service can refuse them with a clear message instead of silently dropping them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


# -- chat completions ------------------------------------------------------------------------------------------


class ImageURL(_Lenient):
    url: str
    detail: Literal["auto", "low", "high"] = "auto"


class VideoURL(_Lenient):
    url: str


class TextContent(_Lenient):
    type: Literal["text"]
    text: str


class ImageContent(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL | str


class VideoContent(_Lenient):
    type: Literal["video_url"]
    video_url: VideoURL | str


ContentPart = Annotated[TextContent | ImageContent | VideoContent, Field(discriminator="type")]


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[Any] | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class _Sampling(_Lenient):
    """The sampling and streaming fields chat completions and completions share."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1, description="-1 or 0: off.")
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: str | list[str] | None) -> list[str] | None:
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and any(not s for s in stop):
            raise ValueError("stop strings must not be empty")
        return stop


class ChatCompletionRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Alias of max_tokens.")
    max_tiles: int | None = Field(default=None, ge=1, le=40, description="Image tiles per image (default 12).")
    num_frames: int | None = Field(default=None, ge=1, le=64, description="Frames sampled from each video.")
    # known, not supported: refused with a clear 400 when set (see vlserve.serving.chat_request)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    logprobs: bool | None = Field(default=None, description="Return each output token's log-probability.")
    top_logprobs: int | None = Field(default=None, ge=0, le=20,
                                     description="With logprobs: that many most likely alternatives per token.")
    response_format: dict[str, Any] | None = Field(
        default=None, description="Structured output: {'type': 'json_object'} or {'type': 'json_schema', "
        "'json_schema': {'name': ..., 'schema': {...}, 'strict': ...}}; the output then parses and validates.")
    structured_outputs: dict[str, Any] | None = Field(
        default=None, description="vLLM's structured outputs: exactly one of {'json': schema}, {'regex': pattern}, "
        "{'choice': [texts]}, {'json_object': true}.")
    logit_bias: dict[str, float] | None = None
    audio: Any = None
    prediction: Any = None


# -- completions -------------------------------------------------------------------------------------------------


class CompletionRequest(_Sampling):
    """POST /v1/completions: raw text into the model, no chat template (OpenAI's legacy completions)."""

    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="Text, or a list of texts (one set of `n` choices each). Token-id prompts are refused.")
    suffix: str | None = Field(default=None, description="Refused when set: these models do not fill in the middle.")
    max_tokens: int | None = Field(default=None, ge=1, description="Tokens to generate per choice (default 16).")
    best_of: int | None = Field(default=None, ge=1, le=16, description="Only best_of == n (or unset) is served.")
    echo: bool = Field(default=False, description="Put the prompt before each choice's text.")
    user: str | None = None
    logprobs: int | None = Field(default=None, ge=0, le=20, description="Each output token's log-probability and "
                                 "that many most likely alternatives (not with echo).")
    structured_outputs: dict[str, Any] | None = Field(
        default=None, description="vLLM's structured outputs: exactly one of {'json': schema}, {'regex': pattern}, "
        "{'choice': [texts]}, {'json_object': true}.")
    # known, not supported: refused with a clear 400 when set
    logit_bias: dict[str, float] | None = None

    @property
    def max_completion_tokens(self) -> None:  # what `to_sampling` reads beside max_tokens (a chat-only field)
        return None


# -- Xinference management ---------------------------------------------------------------------------------------


class LaunchBody(BaseModel):
    """POST /v1/models, as xinference-client's launch_model sends it. Extra keys become engine options."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_name: str = Field(min_length=1)
    model_engine: str | None = None
    model_uid: str | None = None
    model_type: str = "LLM"
    model_size_in_billions: int | float | str | None = None
    model_format: str | None = None
    quantization: str | None = None
    replica: int = Field(default=1, ge=1, le=64)
    n_gpu: int | str | None = "auto"
    n_worker: int | None = 1
    download_hub: Literal["huggingface", "modelscope"] | None = None
    model_path: str | None = None

    def engine_options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RegisterBody(_Lenient):
    """POST /v1/model_registrations/{model_type}: the family file as a JSON string."""

    model: str
    persist: bool = True
    worker_ip: str | None = None
