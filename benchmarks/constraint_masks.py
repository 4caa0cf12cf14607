"""Token-mask cost of structured output at batch 32 vs the cost of a decode step, same process.

32 sequences decode under the JSON schema that ``client.chat.completions.parse(response_format=Person)`` sends
($defs/$ref, anyOf-null, additionalProperties false), each at a different point of its output. Each step the
engine asks every sequence's ``ChatConstraint.fill_bitmask`` for its row (as engine/sampler.py does), samples
an allowed token (untimed) and calls ``accept_token``. References: the lm_head matmul of a decode step at batch
32 (32 x 512 @ 512 x 151,936, float32) and, with --model, one decode step of a small random MoE model with the
real vocabulary. Target: masks < 10 % of a decode step.

    PYTHONPATH=. python benchmarks/constraint_masks.py [--steps 30 --batch 32 --model --threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel

from qwen3_api.chat.constraint import constraint_factory
from qwen3_api.chat.template import ChatTemplate
from qwen3_api.chat.tokens import ChatTokenizer

REPO = Path(__file__).resolve().parents[1]


class Address(BaseModel):
    street: str
    city: str
    zip: int | None


class Person(BaseModel):
    name: str
    age: int
    email: str | None
    homes: list[Address]
    tags: list[str]


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of fn in ms after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _allowed(row: torch.Tensor, vocab: int) -> torch.Tensor:
    bits = ((row.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1).flatten()[:vocab]
    return torch.nonzero(bits).flatten()


def mask_costs(tok: ChatTokenizer, batch: int, steps: int, seed: int) -> tuple[list[float], list[float], float, str]:
    """(fill ms per step, accept ms per step, fraction of rows constrained, a sample output) over ``steps``."""
    prompt = ChatTemplate(tok).encode([{"role": "user", "content": "A person"}], enable_thinking=False)
    rf = {"type": "json_schema", "json_schema": {"name": "Person", "schema": to_strict_json_schema(Person)}}
    factory = constraint_factory(tok, prompt_ids=prompt, response_format=rf)
    assert factory is not None
    gen = torch.Generator().manual_seed(seed)
    width = (tok.model_vocab_size + 31) // 32
    bitmask = torch.full((batch, width), -1, dtype=torch.int32)
    seqs = [factory() for _ in range(batch)]
    outputs: list[list[int]] = [[] for _ in range(batch)]
    long_tok = torch.zeros(tok.model_vocab_size)
    long_tok[: tok.vocab_size] = torch.tensor([float(len(b) > 2) for b in tok.token_bytes])

    def advance(i: int) -> float:
        # sample an allowed token with a mild preference for short tokens, so outputs stay varied but finish
        row = bitmask[i]
        ok = _allowed(row, tok.model_vocab_size)
        tid = int(ok[torch.argmax(torch.rand(len(ok), generator=gen) - long_tok[ok])])
        t0 = time.perf_counter()
        seqs[i].accept_token(tid)
        outputs[i].append(tid)
        spent = time.perf_counter() - t0
        if seqs[i].is_finished() or tid == tok.eos_token_id:
            seqs[i] = factory()
        return spent

    # spread the sequences over different points of the document
    for i in range(batch):
        for _ in range(i % 24):
            bitmask[i].fill_(-1)
            seqs[i].fill_bitmask(bitmask, i)
            advance(i)
    fill_ms, accept_ms, constrained = [], [], 0
    for _ in range(steps):
        bitmask.fill_(-1)
        t0 = time.perf_counter()
        for i, s in enumerate(seqs):
            constrained += bool(s.fill_bitmask(bitmask, i))
        fill_ms.append((time.perf_counter() - t0) * 1000)
        accept_ms.append(sum(advance(i) for i in range(batch)) * 1000)
    return fill_ms, accept_ms, constrained / (steps * batch), tok.decode(outputs[0])


def lm_head_ms(batch: int, vocab: int, hidden: int, repeats: int) -> float:
    """The decode step's lm_head matmul at this batch, float32."""
    h = torch.randn(batch, hidden)
    w = torch.randn(hidden, vocab)
    return median_ms(lambda: h @ w, repeats)


def moe_decode_ms(tokenizer_dir: Path, batch: int, repeats: int) -> float:
    """One batched decode step (forward + logits) of a small random MoE model with the real vocabulary."""
    from contiguous_kv import make_contiguous_metadata

    from qwen3_api.demo.tiny import make_tiny_model
    from qwen3_api.engine.kv_cache import allocate_kv_cache
    from qwen3_api.model.loader import load_model

    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_model(Path(tmp) / "moe", hidden=512, layers=2, heads=8, kv_heads=4, head_dim=64,
                               experts=8, top_k=2, moe_intermediate=256, intermediate=1024,
                               tokenizer_dir=tokenizer_dir, dtype="float32", seed=0)
        net, config = load_model(path, progress=False)
    ctx, block = 64, 16
    caches = allocate_kv_cache(config, batch * (-(-(ctx + 1) // block)), block, "cpu", torch.float32)
    meta = make_contiguous_metadata([1] * batch, "cpu", block, context_lens=[ctx + 1] * batch, max_model_len=ctx + 1)
    ids = torch.randint(0, 1000, (batch,))
    pos = torch.full((batch,), ctx)

    def step() -> None:
        with torch.inference_mode():
            net.compute_logits(net(ids, pos, meta, caches))

    return median_ms(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--model", action="store_true", help="also time a small MoE model's decode step")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tokenizer", type=Path, default=REPO.parent / "shared" / "qwen3-tokenizer")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = ChatTokenizer.from_dir(args.tokenizer)
    _ = tok.llg_tokenizer
    fills, accepts, frac, sample = mask_costs(tok, args.batch, args.steps, seed=0)
    fill, accept = statistics.median(fills), statistics.median(accepts)
    ref = lm_head_ms(args.batch, tok.model_vocab_size, 512, args.repeats)
    rows = [("lm_head matmul 32x512 @ 512x151936 f32", ref)]
    if args.model:
        rows.append(("small MoE decode step (2 layers, h=512)", moe_decode_ms(args.tokenizer, args.batch, args.repeats)))
    print(f"batch {args.batch}, {args.steps} steps, {frac:.0%} of rows constrained, torch threads "
          f"{torch.get_num_threads()}")
    print(f"sequence 0 so far: {sample[:100]!r}")
    print(f"{'what':44} {'ms/step (median)':>17} {'max':>9}")
    print(f"{'masks: fill_bitmask x ' + str(args.batch):44} {fill:17.3f} {max(fills):9.3f}")
    print(f"{'grammar advance: accept_token x ' + str(args.batch):44} {accept:17.3f} {max(accepts):9.3f}")
    for name, ms in rows:
        print(f"{name:44} {ms:17.3f}")
    print()
    for name, ms in rows:
        print(f"masks / {name}: {fill / ms:.1%}   (masks + accept: {(fill + accept) / ms:.1%}; target < 10 %)")


if __name__ == "__main__":
    main()
