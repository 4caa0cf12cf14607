"""Where a decode step's time goes at the Qwen3-30B-A3B shape: MoE, attention, dense matmuls, the rest.

Each part runs 48 times (once per layer, on that layer's weights and KV cache) inside one CUDA graph, so the
times are GPU time without Python launch overhead, comparable with the full CUDA-graph step measured the same
way. "rest" (norms, rotary, router softmax/top-k, residual adds, embedding, sampling) is the full step minus
the parts. It also counts the GPU kernels one eager decode step launches (torch.profiler): in a graph every
kernel still costs a few microseconds, so thousands of tiny kernels can dominate single-stream decode.

    python benchmarks/gpu_breakdown.py                    # batch 1 and 64, context 512, on the GPU
    python benchmarks/gpu_breakdown.py --cpu-smoke        # tiny shapes on CPU (code path only)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch
from gpu_decode import QWEN3_30B_A3B, TINY, bench_decode, decode_metadata, random_model
from gpu_floors import Timer, copy_bandwidth, expected_unique_experts, kv_bytes_per_token, weight_bytes

from qwen3_api.engine.kv_cache import allocate_kv_cache
from qwen3_api.kernels import Kernels
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.qwen3 import Qwen3ForCausalLM


def graphed_seconds(fn: Callable[[], object], timer: Timer, replays: int = 20) -> float:
    """Seconds per call of fn: replayed from a CUDA graph on a GPU, called eagerly on CPU."""
    fn()
    timer.sync()
    if not timer.cuda:
        return timer(fn)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    timer.sync()

    def replay() -> None:
        for _ in range(replays):
            graph.replay()

    return timer(replay) / replays


def count_kernels(fn: Callable[[], object], cuda: bool) -> int:
    """GPU kernels (or, on CPU, aten ops) one call of fn launches, from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    if cuda:
        return sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return sum(1 for e in events if e.name.startswith("aten::") and not e.cpu_parent)


def parts(net: Qwen3ForCausalLM, kernels: Kernels, batch: int, context: int) -> dict[str, Callable[[], object]]:
    """Callables running one part of a decode step over all layers, on static inputs."""
    config, device, dtype = net.config, net.device, net.dtype
    h, hq, hkv, d = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
    layers = net.model.layers
    x = torch.randn(batch, h, device=device).to(dtype)
    routes = [layer.mlp.route(x, kernels) for layer in layers]
    blocks_per_seq = -(-(context + 1) // 16)
    caches = allocate_kv_cache(config, batch * blocks_per_seq, 16, device, dtype)
    attn = decode_metadata(batch, context, 1, device)[0]
    q = torch.randn(batch, hq, d, device=device).to(dtype)
    k = torch.randn(batch, hkv, d, device=device).to(dtype)
    scale = d**-0.5

    def moe() -> None:
        for layer, (w, ids) in zip(layers, routes, strict=True):
            kernels.fused_moe(x, layer.mlp.w13, layer.mlp.w2, w, ids)

    def attention() -> None:
        for k_cache, v_cache in caches:
            kernels.store_kvcache(k, k, k_cache, v_cache, attn.slot_mapping)
            kernels.paged_attention(q, k_cache, v_cache, attn, scale)

    def dense() -> None:
        for layer in layers:
            kernels.linear(x, layer.self_attn.qkv_proj.weight)
            kernels.linear(q.view(batch, -1), layer.self_attn.o_proj.weight)
            kernels.linear(x, layer.mlp.gate.weight)
        net.compute_logits(x)

    return {"MoE (fused_moe)": moe, "attention (store + paged)": attention, "dense matmuls + lm_head": dense}


def part_floor_bytes(config: ModelConfig, name: str, batch: int, context: int, elem: int) -> float:
    """Bytes each part must read at least once per step."""
    dense, expert = weight_bytes(config, elem)
    if name.startswith("MoE"):
        return config.num_hidden_layers * expected_unique_experts(config, batch) * expert
    if name.startswith("attention"):
        return batch * context * kv_bytes_per_token(config, elem)
    return dense


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 2 when no CUDA device and no --cpu-smoke."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--cpu-smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.context = 20
    elif not torch.cuda.is_available():
        print("gpu_breakdown.py needs a CUDA GPU (use --cpu-smoke to exercise the code path)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    config = ModelConfig.from_dict(TINY if args.cpu_smoke else QWEN3_30B_A3B)
    elem = torch.empty((), dtype=config.torch_dtype).element_size()
    timer = Timer(device)
    bandwidth = copy_bandwidth(device, timer, 64 << 20 if args.cpu_smoke else 4 << 30)
    net = random_model(config, device, config.torch_dtype)
    kernels = net.kernels
    print(f"kernels: {kernels.name}; context {args.context}; copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    print("| batch | part | ms / step | floor ms (bytes / copy bandwidth) |\n|---:|---|---:|---:|")
    for batch in args.batch_sizes:
        step_ms = 1e3 * batch / bench_decode(net, batch, args.context, 8, timer, use_graphs=timer.cuda)
        total = 0.0
        for name, fn in parts(net, kernels, batch, args.context).items():
            ms = 1e3 * graphed_seconds(fn, timer)
            total += ms
            floor = 1e3 * part_floor_bytes(config, name, batch, args.context, elem) / bandwidth
            print(f"| {batch} | {name} | {ms:.3f} | {floor:.3f} |")
        print(f"| {batch} | rest (step - parts) | {step_ms - total:.3f} | |")
        print(f"| {batch} | full decode step ({'CUDA graph' if timer.cuda else 'eager'}) | {step_ms:.3f} | |")
        caches = allocate_kv_cache(config, batch * (-(-(args.context + 1) // 16)), 16, device, net.dtype)
        attn = decode_metadata(batch, args.context, 1, device)[0]
        ids = torch.zeros(batch, dtype=torch.long, device=device)
        pos = torch.full((batch,), args.context, dtype=torch.long, device=device)
        n = count_kernels(lambda: net(ids, pos, attn, caches), timer.cuda)  # noqa: B023 (called at once)
        print(f"| {batch} | {'GPU kernels' if timer.cuda else 'aten ops'} per eager step: {n} | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
