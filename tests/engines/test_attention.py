"""The decode attention (grouped queries on their KV heads): one sequence goes through torch's fused SDPA kernel,
a batch through two matmuls + a masked softmax; both must equal plain attention with K/V repeated per query head."""

from __future__ import annotations

import pytest
import torch

from vlserve.engines.transformers_engine.attention import decode_attention


def reference(query, key, value, mask):
    """Textbook attention: K/V repeated to every query head, masked softmax in float64."""
    groups = query.shape[1] // key.shape[1]
    k = key.double().repeat_interleave(groups, dim=1)
    v = value.double().repeat_interleave(groups, dim=1)
    scores = (query.double() @ k.transpose(-1, -2)) / query.shape[-1] ** 0.5
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return (probs @ v).transpose(1, 2)  # [B, 1, H, D]


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("lengths", [[37], [37, 5, 70]])
def test_decode_attention_equals_reference(dtype, tol, lengths):
    torch.manual_seed(0)
    batch, heads, kv_heads, dim, view = len(lengths), 14, 2, 64, max(lengths)
    query = torch.randn(batch, heads, 1, dim, dtype=dtype)
    key = torch.randn(batch, kv_heads, view + 9, dim, dtype=dtype)[:, :, :view]  # a view into a longer buffer
    value = torch.randn(batch, kv_heads, view + 9, dim, dtype=dtype)[:, :, :view]
    mask = (torch.arange(view)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]
    with torch.inference_mode():
        got = decode_attention(query, key, value, mask, None)
    assert got.shape == (batch, 1, heads, dim) and got.dtype == dtype
    torch.testing.assert_close(got.double(), reference(query, key, value, mask), rtol=tol, atol=tol)
