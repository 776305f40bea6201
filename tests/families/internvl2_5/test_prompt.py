"""The internvl2_5 template, image placement and expansion, and stop rules, as exact strings."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from vlserve.errors import InvalidRequest
from vlserve.families.internvl2_5.prompt import (
    DEFAULT_SYSTEM_MESSAGE,
    STOP_STRINGS,
    eos_token_ids,
    render_conversation,
    stop_rules,
)
from vlserve.families.internvl2_5.tiling import ImageInput, num_tiles
from vlserve.messages import ChatMessage, ImagePart, TextPart, VideoPart

REFERENCE = Path(__file__).parents[3] / "src/vlserve/families/internvl2_5/reference"
SYSTEM = f"<|im_start|>system\n{DEFAULT_SYSTEM_MESSAGE}<|im_end|>\n"
OPEN = "<|im_start|>assistant\n"


def user(*parts) -> ChatMessage:
    return ChatMessage("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


def image(width: int = 64, height: int = 48, max_tiles: int | None = None) -> ImagePart:
    return ImagePart(Image.new("RGB", (width, height), "red"), max_tiles)


def test_default_system_message_is_internvls() -> None:
    assert DEFAULT_SYSTEM_MESSAGE == (
        "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
    )


def test_single_turn_text() -> None:
    rendered = render_conversation([ChatMessage.text("user", "Hello")])
    assert rendered.text_with_placeholders == f"{SYSTEM}<|im_start|>user\nHello<|im_end|>\n{OPEN}"
    assert rendered.images == ()


def test_one_image_is_prefixed_and_expanded() -> None:
    part = image(1000, 1000)  # 3x3 grid + thumbnail
    rendered = render_conversation([user("What is this?", part)])
    assert rendered.text_with_placeholders == (
        f"{SYSTEM}<|im_start|>user\n<image>\nWhat is this?<|im_end|>\n{OPEN}"
    )
    assert rendered.images == (ImageInput(part.image, 12),)
    assert rendered.tile_counts() == [10]
    expected = "<img>" + "<IMG_CONTEXT>" * 2560 + "</img>"
    assert rendered.expand() == f"{SYSTEM}<|im_start|>user\n{expected}\nWhat is this?<|im_end|>\n{OPEN}"


def test_custom_system_messages_replace_the_default() -> None:
    messages = [ChatMessage.text("system", "Be brief."), ChatMessage.text("user", "Hi"),
                ChatMessage.text("system", "Answer in French.")]
    assert render_conversation(messages).text_with_placeholders == (
        "<|im_start|>system\nBe brief.\nAnswer in French.<|im_end|>\n"
        f"<|im_start|>user\nHi<|im_end|>\n{OPEN}"
    )
    explicit_empty = [ChatMessage.text("system", ""), ChatMessage.text("user", "Hi")]
    assert render_conversation(explicit_empty).text_with_placeholders.startswith("<|im_start|>system\n<|im_end|>\n")


def test_multi_turn_numbers_images_across_the_conversation() -> None:
    first, second = image(), image(max_tiles=1)
    messages = [
        user(first, "Describe it."),
        ChatMessage.text("assistant", "A red square."),
        user("And this one?", second),
    ]
    rendered = render_conversation(messages)
    assert rendered.text_with_placeholders == (
        f"{SYSTEM}<|im_start|>user\nImage-1: <image>\nDescribe it.<|im_end|>\n"
        "<|im_start|>assistant\nA red square.<|im_end|>\n"
        f"<|im_start|>user\nImage-2: <image>\nAnd this one?<|im_end|>\n{OPEN}"
    )
    assert [i.max_tiles for i in rendered.images] == [12, 1]
    assert rendered.tile_counts() == [num_tiles(64, 48), 1]


def test_two_images_in_one_message() -> None:
    rendered = render_conversation([user(image(), image(), "Compare.")])
    assert rendered.text_with_placeholders == (
        f"{SYSTEM}<|im_start|>user\nImage-1: <image>\nImage-2: <image>\nCompare.<|im_end|>\n{OPEN}"
    )


def test_video_frames_are_one_tile_each() -> None:
    frames = tuple(Image.new("RGB", (640, 480), c) for c in ("red", "green", "blue"))
    rendered = render_conversation([user(VideoPart(frames), "What happens?")])
    assert rendered.text_with_placeholders == (
        f"{SYSTEM}<|im_start|>user\nFrame1: <image>\nFrame2: <image>\nFrame3: <image>\nWhat happens?<|im_end|>\n{OPEN}"
    )
    assert [(i.image, i.max_tiles) for i in rendered.images] == [(f, 1) for f in frames]
    one_frame = "<img>" + "<IMG_CONTEXT>" * 256 + "</img>"
    assert rendered.expand().count(one_frame) == 3


def test_explicit_placement_is_kept() -> None:
    rendered = render_conversation([user("Left <image> right <image>.", image(), image())])
    assert rendered.text_with_placeholders == (
        f"{SYSTEM}<|im_start|>user\nLeft <image> right <image>.<|im_end|>\n{OPEN}"
    )
    assert len(rendered.images) == 2


@pytest.mark.parametrize(
    "messages",
    [
        [user("one <image> marker", image(), image())],
        [ChatMessage.text("user", "a literal <image> with no image")],
        [ChatMessage.text("assistant", "<image>")],
        [ChatMessage("assistant", (image(),))],
        [ChatMessage("system", (image(),))],
    ],
)
def test_misplaced_images_are_rejected(messages) -> None:
    with pytest.raises(InvalidRequest):
        render_conversation(messages)


def test_chinese_text_and_several_text_parts() -> None:
    rendered = render_conversation([user("请描述这张图片。", "详细一点")])
    assert rendered.text_with_placeholders == f"{SYSTEM}<|im_start|>user\n请描述这张图片。\n详细一点<|im_end|>\n{OPEN}"


def test_expand_checks_counts() -> None:
    with pytest.raises(ValueError):
        render_conversation([user(image(), "x")]).expand([1, 2])


@pytest.fixture(scope="module")
def qwen_tokens():
    """Token counting with the real Qwen2.5 BPE (vocab.json/merges.txt) and the template's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = REFERENCE / "tokenizers/qwen2_5"
    tokenizer = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.add_special_tokens(["<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<image>"])
    return lambda text: len(tokenizer.encode(text).ids)


def test_image_token_count(qwen_tokens) -> None:
    """Each `<image>` slot (one token here) becomes 256 context tokens per tile plus `<img>` and `</img>`."""
    rendered = render_conversation([user(image(1920, 1080), image(640, 480, max_tiles=6), "Compare these.")])
    tiles = rendered.tile_counts()
    assert tiles == [9, 7]
    with_slots = qwen_tokens(rendered.text_with_placeholders)
    assert qwen_tokens(rendered.expand()) == with_slots - len(tiles) + sum(256 * t + 2 for t in tiles)


def test_stop_rules_read_generation_config() -> None:
    checkpoints = REFERENCE / "checkpoints"
    assert eos_token_ids(checkpoints / "InternVL2_5-1B") == (151644, 151645, 151643)
    assert eos_token_ids(checkpoints / "InternVL2_5-8B") == (92542, 92543)
    rules = stop_rules(checkpoints / "InternVL2_5-38B")
    assert rules.strings == STOP_STRINGS == ("<|im_end|>",)
    assert rules.token_ids == (151644, 151645)


def test_stop_rules_fall_back_to_llm_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"llm_config": {"eos_token_id": 2}}')
    assert eos_token_ids(tmp_path) == (2,)
    assert eos_token_ids(tmp_path / "missing") == ()
