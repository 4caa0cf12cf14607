"""The step loop: schedule -> run the model -> sample -> update the sequences -> outputs, plus the requests'
bookkeeping (add, abort, report)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer

from qwen3_api.engine.args import EngineArgs
from qwen3_api.engine.block_manager import BlockManager
from qwen3_api.engine.exceptions import EngineError, PromptTooLongError
from qwen3_api.engine.kv_cache import plan_num_blocks
from qwen3_api.engine.model_runner import ModelRunner
from qwen3_api.engine.outputs import EngineStats, FinishReason, RequestOutput
from qwen3_api.engine.request_state import RequestState
from qwen3_api.engine.sampler import Sampler
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.engine.scheduler import Scheduler, SchedulerConfig, StepUpdate
from qwen3_api.engine.sequence import Sequence
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.loader import load_model, resolve_model_path
from qwen3_api.model.qwen3 import Qwen3ForCausalLM

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class StepResult:
    """What one step produced: the outputs of the requests that progressed (streams) or finished, and the
    requests that failed on their own (a constraint raised), each with why; those have no output."""

    outputs: list[RequestOutput] = field(default_factory=list)
    failures: list[tuple[str, EngineError]] = field(default_factory=list)


def default_max_model_len(config: ModelConfig) -> int:
    """The context served when none is asked for: the native one (32,768 for Qwen3-30B-A3B, whose config says
    40,960; 262,144 for the 2507 checkpoints), or all of a checkpoint that already ships static YaRN. YaRN is
    never switched on by default."""
    if config.rope_scaling is not None:
        return config.max_position_embeddings
    return config.native_context_len


class LLMEngine:
    """Continuous batching over a paged KV cache, driven one ``step()`` at a time (not thread-safe)."""

    def __init__(
        self,
        model: Qwen3ForCausalLM,
        model_config: ModelConfig,
        args: EngineArgs,
        *,
        vocab_size: int | None = None,
        tokenizer: object | None = None,
        num_blocks: int | None = None,
    ) -> None:
        self.model_config = model_config
        self.args = args
        self.tokenizer = tokenizer
        self.device = model.device
        self.dtype = model.dtype
        self.kv_cache_dtype = args.resolve_kv_cache_dtype(self.dtype)  # --kv-cache-dtype fp8: float8_e4m3fn
        self.max_model_len = args.max_model_len or default_max_model_len(model_config)
        num_blocks = plan_num_blocks(
            model_config, block_size=args.block_size, dtype=self.kv_cache_dtype, device=self.device,
            max_model_len=self.max_model_len, max_num_seqs=args.max_num_seqs,
            kv_cache_memory=args.kv_cache_memory, gpu_memory_utilization=args.gpu_memory_utilization,
            num_blocks=num_blocks,
        )  # fmt: skip
        self.block_manager = BlockManager(num_blocks, args.block_size, args.enable_prefix_caching)
        self.scheduler = Scheduler(
            SchedulerConfig(args.max_num_seqs, args.max_num_batched_tokens, args.enable_chunked_prefill),
            self.block_manager,
            eos_token_ids=model_config.eos_token_ids,
            # a sequence stops ("length") before it could outgrow the context or the whole cache
            max_seq_len=min(self.max_model_len, num_blocks * args.block_size),
        )
        self.runner = ModelRunner(
            model, model_config, num_blocks=num_blocks, block_size=args.block_size,
            device=self.device, dtype=self.kv_cache_dtype,
            max_num_seqs=args.max_num_seqs, max_model_len=self.max_model_len,  # sizes the CUDA-graph buffers
        )
        self.vocab_size = min(vocab_size or model_config.vocab_size, model_config.vocab_size)
        self.sampler = Sampler(self.vocab_size, model_config.eos_token_ids, seed=args.seed)
        self.requests: dict[str, RequestState] = {}
        self.num_generated_tokens = 0

    @classmethod
    def from_engine_args(cls, args: EngineArgs) -> LLMEngine:
        """Load the checkpoint (and its tokenizer.json when present) and size the KV cache."""
        device = args.resolve_device()
        path = resolve_model_path(args.model, tokenizer=args.tokenizer)
        native = ModelConfig.from_pretrained(path)
        dtype = args.resolve_dtype(native.torch_dtype, device)
        model, config = load_model(path, dtype=dtype, device=device, max_model_len=args.max_model_len)
        if config.rope_scaling is not None and native.rope_scaling is None:
            logger.info(
                "max_model_len %d > native context %d: YaRN rope scaling on (factor %.3g)",
                args.max_model_len, native.native_context_len, config.rope_scaling.get("factor", 0.0),
            )
        tokenizer = load_tokenizer(path)
        vocab = tokenizer.get_vocab_size(with_added_tokens=True) if tokenizer is not None else None
        return cls(model, config, args, vocab_size=vocab, tokenizer=tokenizer)

    # -- requests ---------------------------------------------------------------------------------------
    def check_prompt(self, prompt_token_ids: list[int]) -> None:
        """Raise PromptTooLongError / ValueError for a prompt the engine can't serve (no state changes)."""
        n = len(prompt_token_ids)
        if n == 0:
            raise ValueError("the prompt is empty: give at least one token")
        if n >= self.max_model_len:
            raise PromptTooLongError(n, self.max_model_len, f"this model's context ({self.max_model_len} tokens)")
        cache_tokens = self.block_manager.num_blocks * self.block_manager.block_size
        if n >= cache_tokens:
            raise PromptTooLongError(n, cache_tokens, f"the KV cache ({cache_tokens} tokens)")
        vocab = self.model_config.vocab_size
        if min(prompt_token_ids) < 0 or max(prompt_token_ids) >= vocab:
            raise ValueError(f"prompt token ids must be in [0, {vocab - 1}]")

    def add_request(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, *, stream: bool = False
    ) -> None:
        """Queue a request. ``stream``: report new tokens every step (delta mode) instead of once at the end."""
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        prompt = [int(t) for t in prompt_token_ids]
        self.check_prompt(prompt)
        if params.n > self.scheduler.config.max_num_seqs:
            raise ValueError(f"n must be <= max_num_seqs ({self.scheduler.config.max_num_seqs}), got {params.n}")
        seq = Sequence(request_id, prompt, params)
        self.requests[request_id] = RequestState(request_id, prompt, params, stream, [seq])
        self.scheduler.add(seq)

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Finish every sample of the request with "abort" and free its blocks now; its last output."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return None
        for seq in req.seqs:
            if not seq.is_finished:
                self.scheduler.finish(seq, FinishReason.ABORT)
        while len(req.seqs) < req.params.n:  # samples never forked still count as aborted choices
            child = req.seqs[0].fork(len(req.seqs))
            child.finish_reason = FinishReason.ABORT
            req.seqs.append(child)
        return req.make_output(final=True)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    # -- the step ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> StepResult:
        """One batch: schedule -> model -> sample -> update; report what progressed, finished or failed."""
        batch = self.scheduler.schedule()
        if not batch:
            if self.scheduler.waiting and not self.scheduler.running:
                # can't happen given the admission checks; fail loudly rather than spin forever
                raise RuntimeError(f"the scheduler can't admit {self.scheduler.waiting[0]!r} into an empty batch")
            return StepResult()
        logits = self.runner.execute(batch)
        sampled = self.sampler(logits, batch.sampling_seqs) if logits is not None else None
        update = self.scheduler.update(batch, sampled)
        if sampled is not None:
            self.num_generated_tokens += len(sampled.token_ids)
        return self._report(update)

    def _report(self, update: StepUpdate) -> StepResult:
        """Fold a step's update into the requests: forks join their request, failed requests end, and the
        requests that got tokens report (streams every step, the others once finished)."""
        for child in update.forked:
            self.requests[child.request_id].seqs.append(child)
        result = StepResult(failures=[self._fail(rid, exc) for rid, exc in update.failed.items()])
        for request_id in dict.fromkeys(seq.request_id for seq in update.appended):
            req = self.requests.get(request_id)
            if req is None:
                continue  # it failed in this step: its failure is reported instead
            done = req.finished
            if done:
                del self.requests[request_id]
            if req.stream or done:
                result.outputs.append(req.make_output(final=done))
        return result

    def _fail(self, request_id: str, exc: Exception) -> tuple[str, EngineError]:
        # the request ends now, its blocks freed; the caller learns why from the step's result
        self.abort_request(request_id)
        err = EngineError(f"request {request_id!r} failed: {exc!r}")
        err.__cause__ = exc
        return request_id, err

    def abort_all(self) -> list[str]:
        """Abort every request (after an engine error) and forget the prefix cache; the aborted ids."""
        ids = list(self.requests)
        for rid in ids:
            self.abort_request(rid)
        self.block_manager.reset_prefix_cache()
        return ids

    def stats(self) -> EngineStats:
        """Current load: running / waiting sequences, KV usage, prefix-cache hit rate."""
        bm = self.block_manager
        return EngineStats(
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting),
            kv_usage=bm.usage,
            prefix_cache_hit_rate=bm.hit_rate,
            num_blocks=bm.num_blocks,
            block_size=bm.block_size,
            num_preemptions=self.scheduler.num_preemptions,
        )


def load_tokenizer(path: str | Path) -> Tokenizer | None:
    """The checkpoint's tokenizer.json through the ``tokenizers`` library (None when the dir has none)."""
    file = Path(path) / "tokenizer.json"
    return Tokenizer.from_file(str(file)) if file.exists() else None


__all__ = ["LLMEngine", "RequestState", "StepResult", "load_tokenizer"]
