"""The attention function the engine registers with transformers for the language model.

Decode steps (one query token per sequence, an explicit [B, 1, 1, L] mask from the slot cache) use grouped-query
attention by reshaping the queries onto their KV heads, so K/V are never repeated per query head (transformers'
SDPA path copies them `heads/kv_heads` times whenever a mask is given). On CPU every sequence's grouped queries go
to torch's fused SDPA kernel over its own keys only, one call per sequence, so a sequence's output has the same
bits alone or in any batch (batched matmuls + softmax did not: bf16 rounds the probabilities, and the kernels
differ). Measured on an AVX2-only 2-core EPYC, 1B shapes, bf16, per layer: B=1 as before (31-33 µs at a context
of 70, 68-100 at 600, within run-to-run noise); B=8 195-316 µs at 70 and 564-577 at 600 against 591-850 and
5,373-5,900 for the batched matmuls, which run on emulated bf16 there (on an AVX512-bf16 machine they took 244 µs
at 600). On an accelerator one sequence uses the
fused kernel and a batch the matmuls, one launch each.

On CPU, prefill chunks that continue a cached prefix (several queries, a mask) give SDPA the K/V heads as they are
(`enable_gqa`); on a GPU they keep transformers' path (which notes that CUDA's SDPA, given a mask and shared heads,
falls back to its math kernel). Everything else (a prompt's first chunk, vision) goes to transformers'
own SDPA function unchanged.

Masks: the name is registered with transformers' SDPA mask builder too, so a prefill chunk that continues a cached
prefix (fewer queries than keys) gets the causal mask aligned to its own positions; without it transformers builds
no mask for a custom attention name, and SDPA's `is_causal` would align the chunk's queries with the first keys.
"""

from __future__ import annotations

NAME = "vlserve_sdpa"
_registered = False


def register() -> str:
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

        AttentionInterface.register(NAME, _attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
        _registered = True
    return NAME


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is None or attention_mask.dim() != 4 or (query.shape[2] > 1 and query.device.type != "cpu"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)  # fmt: skip
    if query.shape[2] == 1:
        return decode_attention(query, key, value, attention_mask, scaling), None
    return chunk_attention(query, key, value, attention_mask, scaling), None


def chunk_attention(query, key, value, mask, scaling):
    """A prefill chunk: query [B, H, C, D], key/value [B, Hkv, L, D], mask [B, 1, C, L] -> output [B, C, H, D].
    SDPA shares the K/V heads itself (`enable_gqa`); transformers' path would copy them per query head first. Same
    bits as that path (float32 and bfloat16, checked), ~25% less attention time on the 1B's 13-tile prompt in
    64-token chunks. Without a mask (what transformers' mask builder gives a first chunk or a single token) the
    chunk is causal when it has several tokens."""
    import torch

    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                           is_causal=mask is None and query.shape[2] > 1,
                                                           enable_gqa=key.shape[1] != query.shape[1])  # fmt: skip
    return out.transpose(1, 2).contiguous()


def decode_attention(query, key, value, mask, scaling, rows=None):
    """query [B, H, 1, D], key/value [B, Hkv, L, D], bool mask [B, 1, 1, L] -> output [B, 1, H, D]; `rows` is
    `visible_rows(mask)` when the caller has it for the whole step (else it is worked out here)."""
    import torch

    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    scale = scaling if scaling is not None else dim**-0.5
    if query.device.type != "cpu":
        return _gpu_decode(q, key, value, mask, scale).reshape(batch, heads, 1, dim).transpose(1, 2)
    rows = rows if rows is not None else visible_rows(mask)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if batch == 1:  # the same call as a row of a batch below, without the slicing
        keys, row_mask = rows[0]
        out = sdpa(q, key[:, :, :keys], value[:, :, :keys], attn_mask=row_mask, scale=scale)
    else:
        out = torch.cat([sdpa(q[i : i + 1], key[i : i + 1, :, :keys], value[i : i + 1, :, :keys], attn_mask=row_mask,
                              scale=scale) for i, (keys, row_mask) in enumerate(rows)])  # fmt: skip
    return out.reshape(batch, heads, 1, dim).transpose(1, 2)


def visible_rows(mask) -> list[tuple[int, object]]:
    """Per sequence of a decode step's bool mask [B, 1, 1, L]: how many keys it reads (up to its last visible one)
    and its mask over them, None where it sees them all (always so from the slot cache, whose rows are prefixes)."""
    visible = mask[:, 0, 0]
    extents = (visible.shape[-1] - visible.flip(-1).int().argmax(-1)).tolist()
    counts = visible.sum(-1).tolist()
    return [(keys, None if seen == keys else mask[i : i + 1, :, :, :keys])
            for i, (keys, seen) in enumerate(zip(extents, counts, strict=True))]  # fmt: skip


def _gpu_decode(q, key, value, mask, scale):
    """Grouped queries [B, Hkv, G, D] on an accelerator: one sequence through the fused kernel, a batch through two
    matmuls + a masked softmax (one launch each, no per-sequence loop) -> [B, Hkv, G, D]."""
    import torch

    if q.shape[0] == 1:
        return torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scale)
    scores = torch.matmul(q, key.transpose(-1, -2)).mul_(scale)  # [B, Hkv, G, L]
    scores = scores.float().masked_fill_(~mask, float("-inf"))  # mask [B,1,1,L] broadcasts over Hkv, G
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    return torch.matmul(probs, value)
