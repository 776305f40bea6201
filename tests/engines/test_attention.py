"""The decode attention (grouped queries on their KV heads): one sequence goes through torch's fused SDPA kernel,
a batch through two matmuls + a masked softmax; both must equal plain attention with K/V repeated per query head.
The prefill-chunk attention gives transformers' own bits."""

from __future__ import annotations

import pytest
import torch

from vlserve.engines.transformers_engine.attention import chunk_attention, decode_attention


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunk_attention_equals_transformers_sdpa_bit_for_bit(dtype):
    """A prefill chunk after a cached prefix: SDPA with shared K/V heads gives the bits of transformers' own path,
    which copies K/V per query head first (so a chunked prompt's K/V did not change when this replaced it)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    heads, kv_heads, dim, past, queries = 14, 2, 64, 150, 64
    query = torch.randn(1, heads, queries, dim, dtype=dtype)
    key = torch.randn(1, kv_heads, past + queries, dim, dtype=dtype)
    value = torch.randn(1, kv_heads, past + queries, dim, dtype=dtype)
    mask = (torch.arange(past, past + queries)[:, None] >= torch.arange(past + queries)[None, :])[None, None]
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = heads // kv_heads, True
    with torch.inference_mode():
        got = chunk_attention(query, key, value, mask, dim**-0.5)
        theirs, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=dim**-0.5)
    assert got.shape == (1, queries, heads, dim) and torch.equal(got, theirs)
