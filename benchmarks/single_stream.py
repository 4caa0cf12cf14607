"""Single-stream decode: our engine's ms/token vs a bare loop of our model's forward, same process.

A 128-token prompt, greedy, 128 new tokens, on the offline benchmark's MoE (8 layers, hidden 512, 32 experts,
top-4, the real Qwen3 vocabulary). The bare loop calls the model's forward over a static, contiguous KV
cache, then lm_head and argmax: the floor any engine pays. The difference is the engine's overhead
(scheduler, block tables, sampler, bookkeeping); target <= 15 %.

    python benchmarks/single_stream.py [--new-tokens 128] [--repeats 3] [--threads N]
    # with llama.cpp as the outside anchor (llama-cpp-python built from its PyPI source, the `bench` extra):
    python benchmarks/single_stream.py --model-dir /tmp/bench-moe   # once, to write the checkpoint
    python $LLAMA_CPP/convert_hf_to_gguf.py /tmp/bench-moe --outtype f32 --outfile /tmp/bench-moe-f32.gguf
    python benchmarks/single_stream.py --model-dir /tmp/bench-moe --gguf /tmp/bench-moe-f32.gguf
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contiguous_kv import make_contiguous_metadata  # noqa: E402
from offline_throughput import REPO, make_bench_model  # noqa: E402

from qwen3_api.engine.args import EngineArgs  # noqa: E402
from qwen3_api.engine.kv_cache import allocate_kv_cache  # noqa: E402
from qwen3_api.engine.llm_engine import LLMEngine  # noqa: E402
from qwen3_api.engine.sampling_params import SamplingParams  # noqa: E402
from qwen3_api.model.loader import load_model  # noqa: E402


def engine_decode(engine: LLMEngine, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
    """ms per decode token through the engine (the prefill step excluded) and the tokens."""
    engine.add_request("s", prompt, SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True),
                       stream=True)
    tokens: list[int] = []
    for out in engine.step().outputs:  # prefill + first token
        tokens.extend(out.outputs[0].token_ids)
    start = time.perf_counter()
    while engine.has_unfinished_requests():
        for out in engine.step().outputs:
            tokens.extend(out.outputs[0].token_ids)
    elapsed = time.perf_counter() - start
    return 1000 * elapsed / (new_tokens - 1), tokens


@torch.inference_mode()
def bare_decode(model, config, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
    """ms per decode token of forward + lm_head + argmax over a static cache (the prefill excluded)."""
    block = 16
    total = len(prompt) + new_tokens
    caches = allocate_kv_cache(config, -(-total // block), block, "cpu", model.dtype)
    n = len(prompt)
    attn = make_contiguous_metadata([n], "cpu", block, max_model_len=total)
    hidden = model(torch.tensor(prompt), torch.arange(n), attn, caches)
    token = int(model.compute_logits(hidden[-1:]).argmax(-1))
    tokens = [token]
    start = time.perf_counter()
    for pos in range(n, total - 1):
        attn = make_contiguous_metadata([1], "cpu", block, context_lens=[pos + 1], max_model_len=total)
        hidden = model(torch.tensor([token]), torch.tensor([pos]), attn, caches)
        token = int(model.compute_logits(hidden).argmax(-1))
        tokens.append(token)
    elapsed = time.perf_counter() - start
    return 1000 * elapsed / (new_tokens - 1), tokens


def llama_cpp_decode(llm, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
    """ms per decode token of llama.cpp (llama-cpp-python, greedy), the prompt's evaluation excluded."""
    llm.reset()
    tokens: list[int] = []
    start = 0.0
    for token in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        tokens.append(int(token))
        if len(tokens) == 1:
            start = time.perf_counter()
        if len(tokens) == new_tokens:
            break
    elapsed = time.perf_counter() - start
    return 1000 * elapsed / (new_tokens - 1), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokenizer", type=Path, default=REPO.parent / "shared" / "qwen3-tokenizer")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="keep the benchmark checkpoint here (made if missing), e.g. to convert it to GGUF")
    parser.add_argument("--gguf", type=Path, default=None,
                        help="the same checkpoint as f32 GGUF (llama.cpp's convert_hf_to_gguf.py --outtype f32): "
                             "adds llama.cpp (llama-cpp-python) as the outside anchor")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model_dir or Path(tmp) / "bench-moe"
        if not (path / "model.safetensors").exists():
            make_bench_model(path, args.tokenizer)
        model, config = load_model(path, dtype=torch.float32, progress=False)
    llama = None
    if args.gguf is not None:
        from llama_cpp import Llama

        threads = torch.get_num_threads()
        llama = Llama(str(args.gguf), n_ctx=args.prompt_tokens + args.new_tokens + 16, n_threads=threads,
                      n_threads_batch=threads, n_batch=512, verbose=False)
    rng = random.Random(0)
    prompt = [rng.randrange(151_669) for _ in range(args.prompt_tokens)]
    engine_args = EngineArgs(model="bench", dtype="float32", device="cpu", enable_prefix_caching=False)
    engine = LLMEngine(model, config, engine_args, vocab_size=151_669, num_blocks=64)
    ours, bare, anchor = [], [], []
    same_as_llama = None
    for _ in range(args.repeats):  # interleaved: the shared CPUs' background load hits both alike
        ms, ours_tokens = engine_decode(engine, prompt, args.new_tokens)
        ours.append(ms)
        ms, bare_tokens = bare_decode(model, config, prompt, args.new_tokens)
        bare.append(ms)
        assert ours_tokens == bare_tokens, "the engine and the bare loop must decode the same tokens"
        if llama is not None:
            ms, llama_tokens = llama_cpp_decode(llama, prompt, args.new_tokens)
            anchor.append(ms)
            # float32 both, but a different summation order: report agreement rather than demand it
            same_as_llama = sum(a == b for a, b in zip(ours_tokens, llama_tokens, strict=False))
    best_ours, best_bare = min(ours), min(bare)
    print(f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, greedy, threads "
          f"{torch.get_num_threads()}, best of {args.repeats}")
    print(f"{'':<36} {'ms/token':>9}")
    print(f"{'qwen3-api LLMEngine.step':<36} {best_ours:9.2f}")
    print(f"{'bare forward loop (static cache)':<36} {best_bare:9.2f}")
    print(f"{'engine overhead':<36} {100 * (best_ours / best_bare - 1):8.1f} %")
    if anchor:
        print(f"{'llama.cpp (f32 GGUF, same weights)':<36} {min(anchor):9.2f}")
        print(f"{'ours / llama.cpp':<36} {best_ours / min(anchor):8.2f}x")
        print(f"greedy tokens equal to llama.cpp's: {same_as_llama} of {args.new_tokens}")


if __name__ == "__main__":
    main()
