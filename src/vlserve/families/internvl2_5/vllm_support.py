"""What the vLLM engine asks of the InternVL2.5 family: a config class for original checkpoints, the tokenizer,
prompt token ids + images + processor kwargs for a conversation, and the stop ids.

Config: original checkpoints say `model_type: internvl_chat` and point `auto_map` at the repo's Python files, which
vLLM would execute with trust_remote_code. `InternVLChatConfig` below reads the same config.json instead (built
from whitelisted keys; llm_config becomes transformers' `Qwen2Config` or the small `InternLM2Config` here, which
carries what vLLM's own InternLM2 model reads), and importing this module registers it with transformers'
AutoConfig. vLLM then serves the checkpoint with its own `InternVLChatModel` (weights in the original names).
vLLM's engine process receives the config pickled; unpickling imports this module, so it is registered there too.

Prompt: the shared `internvl2_5` renderer (prompt.py) gives text pieces around image slots. vLLM is handed token
ids, not text: each piece is tokenized on its own (what the full prompt's tokenization does anyway, since
`<img>`/`</img>` are special tokens that split the text) and each slot is the tokenization of `<image>`, which
vLLM's InternVL processor replaces by `<img>` + `<IMG_CONTEXT>`×(256·tiles) + `</img>`. Token ids avoid vLLM's
decode→re-encode of text prompts, which is not exact for InternLM2's sentencepiece tokenizer.

Tiles: vLLM takes one `max_dynamic_patch` per request, the shared renderer one budget per image. Images with a
budget of 1 (video frames, OpenAI detail "low") are resized to one 448×448 tile here, which is pixel-identical to
what InternVL does for them under any budget; the request's budget is the largest of the others, and a request
whose images would be tiled differently under that budget is refused (InvalidRequest), never silently re-tiled.
Videos are always sent as their frames, one `<image>` slot each (`Frame1: <image>…`, as InternVL's chat() does),
so both engines see the same prompt for every backbone; vLLM's own video path exists only for Qwen backbones and
uses different context tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import AutoConfig, PreTrainedConfig, Qwen2Config

from vlserve.errors import InvalidRequest
from vlserve.families.internvl2_5 import DEFAULT_MAX_TILES
from vlserve.families.internvl2_5.config_keys import INTERNLM2_KEYS, QWEN2_KEYS, VISION_KEYS, rope_parameters
from vlserve.families.internvl2_5.prompt import IMAGE_PLACEHOLDER, NUM_IMAGE_TOKEN, render_conversation
from vlserve.families.internvl2_5.tiling import TILE, ImageInput, num_tiles, tile_grid

if TYPE_CHECKING:
    from PIL.Image import Image

    from vlserve.messages import ChatMessage

MODEL_TYPE = "internvl_chat"
DEFAULT_IMAGE_LIMIT = 16  # images per prompt (video frames count as images); vLLM's launch-time limit

_TOP_KEYS = ("downsample_ratio", "dynamic_image_size", "force_image_size", "max_dynamic_patch", "min_dynamic_patch",
             "use_thumbnail", "ps_version", "select_layer", "template", "architectures")  # fmt: skip
# the shared whitelists (config_keys.py) and what only vLLM's config classes read
_EXTRA = ("initializer_range", "tie_word_embeddings", "architectures", "quantization_config")
_VISION_KEYS = VISION_KEYS + ("qk_normalization", "qkv_bias", "initializer_range", "initializer_factor",
                              "attention_dropout", "dropout", "drop_path_rate", "architectures")  # fmt: skip
_QWEN2_KEYS = QWEN2_KEYS + _EXTRA + ("attention_dropout",)
_INTERNLM2_KEYS = INTERNLM2_KEYS + _EXTRA + ("bias",)


def _pick(section: dict[str, Any] | None, keys: Sequence[str]) -> dict[str, Any]:
    return {k: section[k] for k in keys if k in (section or {}) and section[k] is not None}


class InternViTConfig(PreTrainedConfig):
    """InternViT-300M / -6B as vLLM's `InternVisionModel` reads it."""

    model_type = "intern_vit_6b"

    def __init__(self, **kwargs: Any) -> None:
        values = {"hidden_act": "gelu", "norm_type": "rms_norm", "qk_normalization": False, "qkv_bias": True,
                  "layer_norm_eps": 1e-6, "initializer_factor": 0.1, "num_channels": 3, "image_size": 448,
                  "patch_size": 14, "hidden_size": 3200, "intermediate_size": 12800, "num_hidden_layers": 45,
                  "num_attention_heads": 25, "drop_path_rate": 0.0, "attention_dropout": 0.0, "dropout": 0.0}  # fmt: skip
        values.update(_pick(kwargs, _VISION_KEYS))
        rest = {k: v for k, v in kwargs.items() if k not in _VISION_KEYS and k in ("dtype", "torch_dtype")}
        super().__init__(**rest)
        for key, value in values.items():
            setattr(self, key, value)


class InternLM2Config(PreTrainedConfig):
    """InternLM2's llm_config (the remote `InternLM2Config`), as vLLM's own InternLM2 model reads it."""

    model_type = "internlm2"

    def __init__(self, **kwargs: Any) -> None:
        values = {"hidden_act": "silu", "bias": False, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
                  "max_position_embeddings": 32768}  # fmt: skip
        values.update(_pick(kwargs, _INTERNLM2_KEYS))
        values["rope_parameters"] = kwargs.get("rope_parameters") or rope_parameters(kwargs)
        super().__init__(dtype=kwargs.get("dtype") or kwargs.get("torch_dtype"))
        for key, value in values.items():
            setattr(self, key, value)


def _llm_config(llm: dict[str, Any] | PreTrainedConfig | None) -> PreTrainedConfig:
    if isinstance(llm, PreTrainedConfig):
        return llm
    llm = dict(llm or {"architectures": ["Qwen2ForCausalLM"]})
    arch = (llm.get("architectures") or ["?"])[0]
    dtype = llm.get("dtype") or llm.get("torch_dtype")
    if arch == "Qwen2ForCausalLM":
        config = Qwen2Config(**_pick(llm, _QWEN2_KEYS), rope_parameters=rope_parameters(llm), dtype=dtype)
        if "quantization_config" in llm:  # not a Qwen2Config field: keep it where vLLM looks (text config)
            config.quantization_config = llm["quantization_config"]
        return config
    if arch == "InternLM2ForCausalLM":
        return InternLM2Config(**llm)
    raise InvalidRequest(f"llm_config architecture {arch!r} is not an InternVL2.5 backbone "
                         "(Qwen2ForCausalLM or InternLM2ForCausalLM)")  # fmt: skip


class InternVLChatConfig(PreTrainedConfig):
    """An original InternVL2.5 config.json (`InternVLChatModel`), without the repo's configuration file."""

    model_type = MODEL_TYPE

    def __init__(self, vision_config: Any = None, llm_config: Any = None, **kwargs: Any) -> None:
        top = {"downsample_ratio": 0.5, "dynamic_image_size": True, "force_image_size": 448,
               "max_dynamic_patch": DEFAULT_MAX_TILES, "min_dynamic_patch": 1, "use_thumbnail": True,
               "ps_version": "v2", "select_layer": -1, "template": "internvl2_5",
               "architectures": ["InternVLChatModel"]}  # fmt: skip
        top.update(_pick(kwargs, _TOP_KEYS))
        text = _llm_config(kwargs.get("text_config") or llm_config)
        super().__init__(dtype=kwargs.get("dtype") or kwargs.get("torch_dtype"))
        for key, value in top.items():
            setattr(self, key, value)
        self.vision_config = vision_config if isinstance(vision_config, PreTrainedConfig) else InternViTConfig(
            **(vision_config or {}))  # fmt: skip
        self.llm_config = self.text_config = text
        self.tie_word_embeddings = bool(getattr(text, "tie_word_embeddings", False))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("text_config", None)  # the same object as llm_config; written once, under its original name
        return out


def register() -> None:
    """Make AutoConfig (and so vLLM) build `InternVLChatConfig` for `model_type: internvl_chat` (idempotent)."""
    AutoConfig.register(MODEL_TYPE, InternVLChatConfig, exist_ok=True)


register()


def register_vllm_model() -> None:
    """Serve `InternVLChatModel` with vLLM's own model class and a processing info that accepts per-request tiles.

    vLLM 0.32 passes request `mm_processor_kwargs` to every processor it builds, and for Qwen backbones (which get a
    video processor) `max_dynamic_patch` reaches `InternVLVideoProcessor(image_size)`, a TypeError. The processing
    info here gives the video processor only its own argument. Registered in the process that preprocesses
    requests (vLLM's front end, i.e. this one); the engine core keeps vLLM's class, which only runs the model.
    """
    from vllm import ModelRegistry
    from vllm.model_executor.models import internvl
    from vllm.multimodal import MULTIMODAL_REGISTRY

    class ProcessingInfo(internvl.InternVLProcessingInfo):
        def get_video_processor(self, **kwargs: object):
            return super().get_video_processor(**{k: v for k, v in kwargs.items() if k == "image_size"})

    @MULTIMODAL_REGISTRY.register_processor(
        internvl.InternVLMultiModalProcessor, info=ProcessingInfo, dummy_inputs=internvl.InternVLDummyInputsBuilder
    )
    class InternVLChatModel(internvl.InternVLChatModel):
        pass

    ModelRegistry.register_model("InternVLChatModel", InternVLChatModel)


# ------------------------------------------------------------------ tokenizer, stop ids


def model_view(model_dir: Path, outdir: Path) -> Path:
    """A directory vLLM loads as model *and* tokenizer: the checkpoint's files linked, its tokenizer replaced.

    The tokenizer is written in a form transformers loads natively (InternLM2: the converted fast tokenizer, no
    `auto_map`), so vLLM never needs remote code; keeping config.json beside it lets vLLM read the model config
    from the tokenizer path as it does (it retries with sleeps when there is none)."""
    from vlserve.families.internvl2_5.tokenizer import save_tokenizer

    model_dir, outdir = Path(model_dir).resolve(), Path(outdir)
    save_tokenizer(model_dir, outdir)
    written = {p.name for p in outdir.iterdir()}
    for source in model_dir.iterdir():
        if source.is_file() and source.name not in written and source.name not in _TOKENIZER_FILES:
            (outdir / source.name).symlink_to(source)
    return outdir


_TOKENIZER_FILES = frozenset({"tokenizer_config.json", "tokenizer.json", "tokenizer.model", "special_tokens_map.json",
                              "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja",
                              "chat_template.json"})  # fmt: skip


def load_tokenizer(model_dir: Path):
    from vlserve.families.internvl2_5.tokenizer import load_tokenizer as _load

    return _load(Path(model_dir))


def stop_token_ids(model_dir: Path, tokenizer: Any) -> tuple[int, ...]:
    """`<|im_end|>` plus the checkpoint's eos ids, as vLLM stop_token_ids."""
    from vlserve.families.internvl2_5.loader import stop_token_ids as _stop_ids

    return tuple(sorted(_stop_ids(Path(model_dir), tokenizer)))


# ------------------------------------------------------------------ prompts


@dataclass(frozen=True)
class VllmPrompt:
    prompt_token_ids: list[int]  # image slots as the tokens of `<image>`; vLLM expands them
    images: list[Image]
    mm_processor_kwargs: dict[str, Any]
    image_tokens: int  # tokens the slots become: `<img>` + 256 per tile + `</img>` each
    prompt_tokens: int  # the prompt's length once vLLM has expanded the slots

    def as_vllm_prompt(self) -> dict[str, Any]:
        """A `vllm.inputs.TokensPrompt` (a TypedDict, built here as a plain dict)."""
        prompt: dict[str, Any] = {"prompt_token_ids": self.prompt_token_ids}
        if self.images:
            prompt["multi_modal_data"] = {"image": self.images}
            prompt["mm_processor_kwargs"] = self.mm_processor_kwargs
        return prompt


def encode(tokenizer: Any, messages: Sequence[ChatMessage]) -> VllmPrompt:
    """The `internvl2_5` prompt as token ids with one `<image>` slot per image, plus the images to send."""
    rendered = render_conversation(messages)
    slot = tokenizer(IMAGE_PLACEHOLDER, add_special_tokens=False)["input_ids"]
    ids = list(tokenizer(rendered.pieces[0], add_special_tokens=True)["input_ids"])
    for piece in rendered.pieces[1:]:
        ids += slot + tokenizer(piece, add_special_tokens=False)["input_ids"]
    images, budget = plan_images(rendered.images)
    tiles = sum(num_tiles(image.width, image.height, max_tiles) for image, max_tiles in rendered.images)
    kwargs = {"max_dynamic_patch": budget} if images else {}
    image_tokens = NUM_IMAGE_TOKEN * tiles + 2 * len(images)
    return VllmPrompt(ids, images, kwargs, image_tokens, len(ids) - len(slot) * len(images) + image_tokens)


def plan_images(inputs: Sequence[ImageInput]) -> tuple[list[Image], int]:
    """RGB images to send and the one `max_dynamic_patch` under which vLLM tiles each as its own budget says."""
    budget = max((max_tiles for _, max_tiles in inputs if max_tiles > 1), default=1)
    out = []
    for image, max_tiles in inputs:
        image = image.convert("RGB") if image.mode != "RGB" else image
        if max_tiles == 1 and budget > 1:
            image = image.resize((TILE, TILE), _bicubic())  # what InternVL does to a 1-tile image, under any budget
        elif max_tiles < budget and tile_grid(image.width, image.height, 1, max_tiles) != tile_grid(
            image.width, image.height, 1, budget
        ):
            raise InvalidRequest(
                f"this request's images ask for different tile budgets ({max_tiles} and {budget}) that tile a "
                f"{image.width}x{image.height} image differently; the vLLM engine applies one budget per request "
                "(images with 1 tile excepted): send these images in separate requests or with the same budget",
                param="messages",
            )
        out.append(image)
    return out, budget


def _bicubic():
    from PIL import Image

    return Image.Resampling.BICUBIC
