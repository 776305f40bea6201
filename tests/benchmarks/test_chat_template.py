"""P4/P7 compare vlserve with vLLM's own server, which renders `benchmarks/internvl2_5_chat_template.jinja` and
tokenizes the text as vLLM's chat endpoint does (`add_special_tokens=False`, tokenizer from the folder vLLM is
given). For the comparison to be like for like, that must give the prompt ids vlserve's vLLM engine builds, on
both backbones: Qwen2 (no BOS) and InternLM2 (BOS `<s>`, which InternVL's own chat() gets from the tokenizer)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from vlserve.families.internvl2_5 import vllm_support
from vlserve.families.internvl2_5.twin import write_twin
from vlserve.messages import ChatMessage

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.config import BENCH_DIR

TEMPLATE = (BENCH_DIR / "internvl2_5_chat_template.jinja").read_text(encoding="utf-8")
CONVERSATIONS = {
    "default system": [ChatMessage.text("user", "Describe the weather in two words.")],
    "own system, two turns": [
        ChatMessage.text("system", "You are terse."),
        ChatMessage.text("user", "你好"),
        ChatMessage.text("assistant", "Hello."),
        ChatMessage.text("user", "And again?"),
    ],
}


@pytest.mark.parametrize("architecture", ["InternVL2_5-1B", "InternVL2_5-8B"])
@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_vllm_server_template_gives_vlserves_prompt_ids(tmp_path, architecture, name):
    model = write_twin(architecture, tmp_path / "model")
    view = vllm_support.model_view(model, tmp_path / "view")
    served = AutoTokenizer.from_pretrained(view)  # what vLLM's server loads from the folder it is given
    messages = CONVERSATIONS[name]
    text = served.apply_chat_template(
        [{"role": m.role, "content": m.content[0].text} for m in messages],
        chat_template=TEMPLATE, tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    server_ids = served(text, add_special_tokens=False)["input_ids"]
    ours = vllm_support.encode(vllm_support.load_tokenizer(model), messages).prompt_token_ids
    assert server_ids == ours
