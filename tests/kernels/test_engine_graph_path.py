"""The engine's decode steps through the CUDA-graph runner's static buffers give the same greedy tokens.

On CPU the runner runs eagerly (use_graphs=False) with the Triton kernels under the interpreter: this checks
the ModelRunner wiring (ids, positions, metadata, padding to a bucket) without a GPU.
"""

from __future__ import annotations

import torch

from qwen3_api.engine.args import EngineArgs
from qwen3_api.engine.cuda_graphs import CudaGraphDecodeRunner
from qwen3_api.engine.llm_engine import LLMEngine
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.kernels import torch_kernels
from tests.kernels.helpers import tiny_model, triton_kernels

PROMPTS = [[5, 9, 13, 2, 7], [100, 3], [64, 64, 1, 8, 9, 30, 31, 2, 17, 4, 5, 6, 7, 8, 9, 10, 11, 12]]


def greedy(engine: LLMEngine) -> dict[str, list[int]]:
    params = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(str(i), prompt, params)
    done: dict[str, list[int]] = {}
    for _ in range(100):
        if not engine.has_unfinished_requests():
            break
        for out in engine.step().outputs:
            if out.finished:
                done[out.request_id] = out.outputs[0].token_ids
    return done


def make_engine(net) -> LLMEngine:  # noqa: ANN001
    args = EngineArgs(device="cpu", dtype="float32", max_num_seqs=4, max_model_len=64, block_size=16)
    return LLMEngine(net, net.config, args, num_blocks=16)


def test_cpu_runner_builds_no_graph_runner():
    assert make_engine(tiny_model(seed=4)).runner.graph_runner is None


def test_greedy_tokens_through_the_padded_runner_match_the_torch_path():
    net = tiny_model(seed=4, kernels=triton_kernels())
    engine = make_engine(net)
    runner = engine.runner
    graphs = CudaGraphDecodeRunner(
        net, runner.kv_caches, max_batch_size=4, max_blocks_per_seq=4, buckets=[2, 4], use_graphs=False
    )
    calls: list[int] = []
    original_run = graphs.run

    def counting_run(ids: torch.Tensor, pos: torch.Tensor, attn) -> torch.Tensor:  # noqa: ANN001
        calls.append(attn.num_seqs)
        return original_run(ids, pos, attn)

    graphs.run = counting_run
    runner.graph_runner = graphs
    got = greedy(engine)
    assert calls and 3 in calls  # decode steps of 3 sequences went through the bucket of 4

    net.kernels = torch_kernels()  # the same weights through the torch set, without the graph runner
    expected = greedy(make_engine(net))
    assert got == expected and len(got) == 3 and all(len(t) == 5 for t in got.values())
