"""The decode attention (grouped queries on their KV heads, torch's fused SDPA kernel per sequence on CPU) must
equal plain attention with K/V repeated per query head, and give a sequence the same bits alone or in any batch.
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
def test_a_mask_with_a_hole_is_honoured(dtype):
    """The slot cache's rows are prefixes; any other visible set still gets exactly its keys."""
    torch.manual_seed(1)
    query = torch.randn(2, 14, 1, 64, dtype=dtype)
    key, value = torch.randn(2, 2, 40, 64, dtype=dtype), torch.randn(2, 2, 40, 64, dtype=dtype)
    mask = torch.ones(2, 1, 1, 40, dtype=torch.bool)
    mask[0, ..., 10:20] = False
    mask[1, ..., 33:] = False
    with torch.inference_mode():
        got = decode_attention(query, key, value, mask, None)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.double(), reference(query, key, value, mask), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_sequence_gets_the_same_bits_alone_and_in_any_batch(dtype, seed):
    """What the slot cache hands attention: a batch's rows padded to the longest (tail masked), one sequence unpadded.
    Every row, alone, must give the bits it got in batches of 3 and 9 (batched matmuls with bf16 probabilities did
    not: 543 of 896 values of a row differed on these shapes)."""
    torch.manual_seed(seed)
    lengths = [300, 37, 301, 5, 299, 128, 1, 250, 64]
    heads, kv_heads, dim, view = 14, 2, 64, max(lengths)
    keys = torch.randn(len(lengths), kv_heads, view + 256, dim, dtype=dtype)  # slot buffers, capacity to spare
    values = torch.randn(len(lengths), kv_heads, view + 256, dim, dtype=dtype)
    query = torch.randn(len(lengths), heads, 1, dim, dtype=dtype)

    def step(rows):
        width = max(lengths[i] for i in rows)
        mask = (torch.arange(width)[None, :] < torch.tensor([lengths[i] for i in rows])[:, None])[:, None, None, :]
        with torch.inference_mode():
            return decode_attention(query[rows], keys[rows, :, :width], values[rows, :, :width], mask, None)

    alone = [step([i]) for i in range(len(lengths))]
    for batch in ([0, 1, 2], [3, 0, 4], list(range(len(lengths)))):
        together = step(batch)
        for position, i in enumerate(batch):
            assert torch.equal(together[position : position + 1], alone[i]), (batch, i)


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
