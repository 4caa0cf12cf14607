"""AsyncLLMEngine: streams per request from the event loop, aborts on early close, errors not hangs."""

from __future__ import annotations

import asyncio

import pytest

from qwen3_api.engine.args import EngineArgs
from qwen3_api.engine.async_engine import AsyncLLMEngine
from qwen3_api.engine.exceptions import EngineError, PromptTooLongError
from qwen3_api.engine.llm_engine import LLMEngine
from qwen3_api.engine.protocol import EngineClient
from qwen3_api.engine.sampling_params import SamplingParams
from tests.engine.helpers import TOKENIZER_VOCAB, assert_no_leaks


@pytest.fixture
def async_engine(tiny_moe):
    model, config = tiny_moe
    engine = LLMEngine(model, config, EngineArgs(model="tiny", max_model_len=512), vocab_size=TOKENIZER_VOCAB,
                       num_blocks=128)
    return AsyncLLMEngine(engine)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


async def collect(engine, rid, prompt, params):
    outs = []
    async for out in engine.generate(prompt, params, rid):
        outs.append(out)
    return outs


def test_concurrent_streams_match_the_offline_engine(async_engine, tiny_moe):
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    prompts = [list(range(i * 10, i * 10 + 20 + i)) for i in range(5)]

    async def main():
        results = await asyncio.gather(*(collect(async_engine, f"r{i}", p, params) for i, p in enumerate(prompts)))
        await async_engine.shutdown()
        return results

    results = run(main())
    model, config = tiny_moe
    offline = LLMEngine(model, config, EngineArgs(model="tiny"), vocab_size=TOKENIZER_VOCAB, num_blocks=128)
    for i, p in enumerate(prompts):
        offline.add_request(str(i), p, params)
    final = {}
    while offline.has_unfinished_requests():
        final.update({o.request_id: o for o in offline.step().outputs})
    for i, outs in enumerate(results):
        assert outs[-1].finished and all(not o.finished for o in outs[:-1])
        tokens = [t for o in outs for t in o.outputs[0].token_ids]
        assert tokens == final[str(i)].outputs[0].token_ids
    assert_no_leaks(async_engine.engine)


def test_closing_the_stream_early_aborts_and_frees_blocks(async_engine):
    async def main():
        gen = async_engine.generate(list(range(40)), SamplingParams(max_tokens=10_000, ignore_eos=True), "long")
        first = await gen.__anext__()
        assert not first.finished
        await gen.aclose()
        for _ in range(200):  # the abort is handled by the worker at its next step
            await asyncio.sleep(0.01)
            if not async_engine.engine.has_unfinished_requests():
                break
        stats = async_engine.stats()
        await async_engine.shutdown()
        return stats

    stats = run(main())
    assert stats.running == 0 and stats.kv_usage == 0.0
    assert_no_leaks(async_engine.engine)


def test_abort_ends_the_stream_with_abort(async_engine):
    async def main():
        outs = []
        async for out in async_engine.generate(list(range(30)), SamplingParams(max_tokens=10_000), "x"):
            outs.append(out)
            if len(outs) == 2:
                await async_engine.abort("x")
        await async_engine.shutdown()
        return outs

    outs = run(main())
    assert outs[-1].finished and outs[-1].outputs[0].finish_reason == "abort"
    assert_no_leaks(async_engine.engine)


def test_the_async_engine_is_an_engine_client(async_engine):
    assert isinstance(async_engine, EngineClient)
    assert async_engine.is_running and async_engine.max_model_len == 512
    run(async_engine.shutdown())
    assert not async_engine.is_running


def test_prompt_too_long_raises_at_admission(async_engine):
    async def main():
        with pytest.raises(PromptTooLongError):
            await collect(async_engine, "big", list(range(600)), SamplingParams())
        await async_engine.shutdown()

    run(main())


def test_engine_errors_reach_the_waiting_requests(async_engine):
    def broken(batch):
        raise RuntimeError("device lost")

    async_engine.engine.runner.execute = broken

    async def main():
        tasks = [collect(async_engine, f"e{i}", list(range(20)), SamplingParams()) for i in range(3)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await async_engine.shutdown()
        return results

    results = run(main())
    assert all(isinstance(r, EngineError) and "device lost" in str(r) for r in results)
    assert_no_leaks(async_engine.engine)


def test_shutdown_fails_requests_in_flight_and_refuses_new_ones(async_engine):
    async def main():
        task = asyncio.create_task(
            collect(async_engine, "slow", list(range(20)), SamplingParams(max_tokens=100_000, ignore_eos=True))
        )
        await asyncio.sleep(0.2)
        await async_engine.shutdown()
        with pytest.raises(EngineError):
            await task
        with pytest.raises(EngineError):
            await collect(async_engine, "late", [1, 2, 3], SamplingParams())

    run(main())
    assert_no_leaks(async_engine.engine)


def test_a_failing_constraint_raises_in_its_own_stream(async_engine):
    class Broken:
        def fill_bitmask(self, bitmask, row):
            raise ValueError("bad grammar")

        def accept_token(self, token_id):
            pass

        def is_finished(self):
            return False

    async def main():
        bad = collect(async_engine, "bad", list(range(20)), SamplingParams(constraint_factory=Broken))
        good = collect(async_engine, "good", list(range(20)), SamplingParams(max_tokens=4, ignore_eos=True))
        results = await asyncio.gather(bad, good, return_exceptions=True)
        await async_engine.shutdown()
        return results

    bad, good = run(main())
    assert isinstance(bad, EngineError) and "bad grammar" in str(bad)
    assert good[-1].finished and good[-1].outputs[0].num_tokens == 4
    assert_no_leaks(async_engine.engine)
