"""Through the paged cache: chunked prefill + decode == one full prefill; greedy decoding == transformers."""

from __future__ import annotations

import pytest
import torch

from qwen3_api.engine.kv_cache import allocate_kv_cache
from qwen3_api.model.loader import load_model
from tests.model.helpers import (
    TINY_DENSE,
    TINY_MOE,
    hf_model,
    make_contiguous_metadata,
    our_prefill_logits,
    random_seqs,
)

BLOCK = 4
MAX_LEN = 64


@pytest.fixture(scope="module", params=["moe", "dense"])
def models(request, tmp_path_factory):
    overrides = TINY_MOE if request.param == "moe" else TINY_DENSE
    ref = hf_model(overrides, seed=3)
    path = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(path)
    net, _ = load_model(path, dtype=torch.float32, progress=False)
    return ref, net


def _step(net, caches, chunks: list[list[int]], starts: list[int], owners: list[int] | None = None):
    """Run one flat batch: sequence owners[b] feeds chunks[b] at positions starts[b]...
    Returns (logits of every token, logits of each sequence's last token)."""
    lens = [len(c) for c in chunks]
    ctx = [s + n for s, n in zip(starts, lens, strict=True)]
    attn = make_contiguous_metadata(
        lens, "cpu", BLOCK, context_lens=ctx, max_model_len=MAX_LEN, seq_ids=owners
    )
    ids = torch.tensor([t for c in chunks for t in c])
    positions = torch.tensor([p for s, n in zip(starts, lens, strict=True) for p in range(s, s + n)])
    hidden = net(ids, positions, attn, caches)
    last = attn.cu_seqlens_q[1:].long() - 1
    return net.compute_logits(hidden), net.compute_logits(hidden[last])


def test_chunked_prefill_and_decode_match_full_prefill(models) -> None:
    _, net = models
    seqs = random_seqs([13, 22, 6], 300, seed=5)
    full = our_prefill_logits(net, seqs)
    caches = allocate_kv_cache(net.config, 3 * MAX_LEN // BLOCK, BLOCK, "cpu", torch.float32)
    got: list[list[torch.Tensor]] = [[], [], []]
    # chunks cross block boundaries and mix a fresh prefill, a continued prefill and (later) decodes
    plan = [(0, 5), (5, 11), (11, 12), (12, 13)]
    done = [0, 0, 0]
    for _, size in plan:
        chunks, starts, owners = [], [], []
        for b, s in enumerate(seqs):
            n = min(size - done[b] if size > done[b] else 0, len(s) - done[b])
            if n > 0:
                chunks.append(s[done[b] : done[b] + n])
                starts.append(done[b])
                owners.append(b)
        logits, _ = _step(net, caches, chunks, starts, owners)
        for b, part in zip(owners, logits.split([len(c) for c in chunks]), strict=True):
            got[b].append(part)
            done[b] += part.shape[0]
    # the rest of every sequence one token at a time: the batched decode path
    while any(d < len(s) for d, s in zip(done, seqs, strict=True)):
        owners = [b for b in range(3) if done[b] < len(seqs[b])]
        logits, _ = _step(
            net, caches, [[seqs[b][done[b]]] for b in owners], [done[b] for b in owners], owners
        )
        for b, row in zip(owners, logits, strict=True):
            got[b].append(row[None])
            done[b] += 1
    for b in range(3):
        assert (torch.cat(got[b]) - full[b]).abs().max().item() <= 1e-4


def test_decode_path_is_used_and_matches(models) -> None:
    _, net = models
    seqs = random_seqs([9, 3], 300, seed=9)
    caches = allocate_kv_cache(net.config, 2 * MAX_LEN // BLOCK, BLOCK, "cpu", torch.float32)
    _step(net, caches, [s[:-1] for s in seqs], [0, 0])
    attn = make_contiguous_metadata([1, 1], "cpu", BLOCK, context_lens=[9, 3], max_model_len=MAX_LEN)
    assert attn.is_decode
    _, last = _step(net, caches, [[s[-1]] for s in seqs], [8, 2])
    full = our_prefill_logits(net, seqs)
    assert torch.allclose(last, torch.stack([f[-1] for f in full]), atol=1e-4)


def test_greedy_32_tokens_match_transformers_generate(models) -> None:
    ref, net = models
    prompts = random_seqs([7, 12, 3], 300, seed=11)
    steps = 32
    caches = allocate_kv_cache(net.config, 3 * MAX_LEN // BLOCK, BLOCK, "cpu", torch.float32)
    _, last = _step(net, caches, prompts, [0, 0, 0])
    outs: list[list[int]] = [[] for _ in prompts]
    for step in range(steps):
        nxt = last.argmax(-1).tolist()
        for b, t in enumerate(nxt):
            outs[b].append(t)
        if step + 1 < steps:
            _, last = _step(net, caches, [[t] for t in nxt], [len(p) + step for p in prompts])
    for prompt, ours in zip(prompts, outs, strict=True):
        with torch.no_grad():
            theirs = ref.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=steps,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )[0, len(prompt) :].tolist()
        assert len(theirs) == steps
        assert len(set(ours)) > 1, "degenerate decode proves little"
        assert ours == theirs
