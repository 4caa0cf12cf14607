"""The step loop: schedule -> run the model -> sample -> update sequences -> outputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qwen3_api.engine.args import EngineArgs
from qwen3_api.engine.block_manager import BlockManager
from qwen3_api.engine.exceptions import EngineError, PromptTooLongError
from qwen3_api.engine.model_runner import ModelRunner, kv_block_bytes, num_kv_blocks
from qwen3_api.engine.outputs import CompletionOutput, EngineStats, RequestOutput
from qwen3_api.engine.sampler import Sampler
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.engine.scheduler import Scheduler, SchedulerConfig
from qwen3_api.engine.sequence import Sequence
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.qwen3 import Qwen3ForCausalLM

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RequestState:
    """A request's samples and what of them has been reported."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    stream: bool
    seqs: list[Sequence] = field(default_factory=list)
    emitted: dict[int, int] = field(default_factory=dict)  # sample index -> output tokens reported

    @property
    def finished(self) -> bool:
        return len(self.seqs) == self.params.n and all(s.is_finished for s in self.seqs)


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
        self.max_model_len = args.max_model_len or default_max_model_len(model_config)
        if num_blocks is None:
            blocks_per_seq = -(-self.max_model_len // args.block_size)
            num_blocks = num_kv_blocks(
                model_config, args.block_size, self.dtype, args.kv_cache_memory, self.device,
                gpu_memory_utilization=args.gpu_memory_utilization,
                max_useful_blocks=args.max_num_seqs * blocks_per_seq,
            )
        block_gib = kv_block_bytes(model_config, args.block_size, self.dtype) * num_blocks / 2**30
        logger.info(
            "KV cache: %d blocks of %d tokens = %d tokens, %.3f GiB (%s, %s)",
            num_blocks, args.block_size, num_blocks * args.block_size, block_gib, self.dtype, self.device,
        )
        if self.max_model_len > num_blocks * args.block_size:
            logger.warning(
                "the KV cache holds %d tokens, less than max_model_len %d: longer prompts are refused",
                num_blocks * args.block_size, self.max_model_len,
            )
        self.block_manager = BlockManager(num_blocks, args.block_size, args.enable_prefix_caching)
        self.scheduler = Scheduler(
            SchedulerConfig(args.max_num_seqs, args.max_num_batched_tokens, args.enable_chunked_prefill),
            self.block_manager,
        )
        self.runner = ModelRunner(
            model, model_config, num_blocks=num_blocks, block_size=args.block_size,
            device=self.device, dtype=self.dtype,
            max_num_seqs=args.max_num_seqs, max_model_len=self.max_model_len,  # sizes the CUDA-graph buffers
        )
        self.vocab_size = min(vocab_size or model_config.vocab_size, model_config.vocab_size)
        self.eos_token_ids = set(model_config.eos_token_ids)
        self.sampler = Sampler(self.vocab_size, model_config.eos_token_ids, seed=args.seed)
        # a sequence stops ("length") before it could outgrow the context or the whole cache
        self.max_seq_len = min(self.max_model_len, num_blocks * args.block_size)
        self.requests: dict[str, RequestState] = {}
        self.failures: list[tuple[str, EngineError]] = []
        self.num_generated_tokens = 0

    @classmethod
    def from_engine_args(cls, args: EngineArgs) -> LLMEngine:
        """Load the checkpoint (and its tokenizer.json when present) and size the KV cache."""
        from qwen3_api.model.loader import load_model, resolve_model_path

        device = args.resolve_device()
        path = resolve_model_path(args.model)
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
                self.scheduler.finish(seq, "abort")
        while len(req.seqs) < req.params.n:  # samples never forked still count as aborted choices
            child = req.seqs[0].fork(len(req.seqs))
            child.finish_reason = "abort"
            req.seqs.append(child)
        return self._make_output(req, final=True)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    # -- the step ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[RequestOutput]:
        """Run one batch; return the outputs of the requests that progressed (streams) or finished."""
        seqs = self.scheduler.schedule()
        if not seqs:
            if self.scheduler.waiting and not self.scheduler.running:
                # can't happen given the admission checks; fail loudly rather than spin forever
                raise RuntimeError(f"the scheduler can't admit {self.scheduler.waiting[0]!r} into an empty batch")
            return []
        logits, sample_seqs = self.runner.execute(seqs)
        for seq in seqs:
            seq.num_computed_tokens += seq.num_scheduled_tokens
            seq.num_scheduled_tokens = 0
        if logits is None:
            return []
        sampled = self.sampler(logits, sample_seqs)
        failed = {id(seq): exc for seq, exc in self.sampler.failures}
        self.sampler.failures.clear()
        touched: dict[str, RequestState] = {}
        for seq, token, logprobs in zip(sample_seqs, sampled.token_ids, sampled.logprobs, strict=True):
            req = self.requests.get(seq.request_id)
            if req is None or seq.is_finished:
                continue  # its request failed earlier in this loop
            if id(seq) in failed:
                self._fail(req, failed[id(seq)])
                continue
            if seq.pending_forks:
                self._fork(seq, req)
            try:
                self._append(seq, token, logprobs)
            except Exception as exc:  # a constraint's accept_token / is_finished raised
                self._fail(req, exc)
                continue
            touched[req.request_id] = req
        self.num_generated_tokens += len(sample_seqs)
        outputs = []
        for req in touched.values():
            done = req.finished
            if done:
                del self.requests[req.request_id]
            if req.stream or done:
                outputs.append(self._make_output(req, final=done))
        return outputs

    def _fail(self, req: RequestState, exc: Exception) -> None:
        # the request ends now, its blocks freed; the caller learns why from pop_failures()
        self.abort_request(req.request_id)
        err = EngineError(f"request {req.request_id!r} failed: {exc!r}")
        err.__cause__ = exc
        self.failures.append((req.request_id, err))

    def pop_failures(self) -> list[tuple[str, EngineError]]:
        """Requests that failed on their own (e.g. a constraint raised) since the last call, with why."""
        failures, self.failures = self.failures, []
        return failures

    def _fork(self, parent: Sequence, req: RequestState) -> None:
        # the other samples share the parent's full prompt blocks and recompute only the partial last one
        for i in range(1, parent.pending_forks + 1):
            child = parent.fork(i)
            child.num_cached_tokens = parent.num_cached_tokens
            self.block_manager.share_prefix(parent, child)
            self.scheduler.add_running(child)
            req.seqs.append(child)
        parent.pending_forks = 0

    def _append(self, seq: Sequence, token: int, logprobs: dict[int, float] | None) -> None:
        seq.append_token(token)
        if seq.output_logprobs is not None:
            seq.output_logprobs.append(logprobs or {})
        p = seq.params
        if seq.constraint is not None:
            seq.constraint.accept_token(token)
        if not p.ignore_eos and token in self.eos_token_ids:
            self.scheduler.finish(seq, "stop")
        elif token in p.stop_token_ids:
            self.scheduler.finish(seq, "stop", stop_reason=token)
        elif seq.constraint is not None and seq.constraint.is_finished():
            self.scheduler.finish(seq, "stop")
        elif p.max_tokens is not None and seq.num_output_tokens >= p.max_tokens:
            self.scheduler.finish(seq, "length")
        elif len(seq) >= self.max_seq_len:
            self.scheduler.finish(seq, "length")

    def _make_output(self, req: RequestState, *, final: bool) -> RequestOutput:
        outs = []
        for seq in sorted(req.seqs, key=lambda s: s.index):
            start = req.emitted.get(seq.index, 0) if req.stream else 0
            n_out = seq.num_output_tokens
            if req.stream and start == n_out and not (seq.finish_reason and final):
                continue  # nothing new for this sample
            req.emitted[seq.index] = n_out
            lps = seq.output_logprobs[start:] if seq.output_logprobs is not None else None
            outs.append(
                CompletionOutput(
                    index=seq.index,
                    token_ids=seq.output_token_ids[start:],
                    logprobs=lps,
                    finish_reason=seq.finish_reason,
                    stop_reason=seq.stop_reason,
                    num_tokens=n_out,
                )
            )
        return RequestOutput(
            request_id=req.request_id,
            prompt_token_ids=req.prompt_token_ids,
            num_cached_tokens=req.seqs[0].num_cached_tokens,
            outputs=outs,
            finished=final,
        )

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


def load_tokenizer(path: str | Path) -> object | None:
    """The checkpoint's tokenizer.json through the ``tokenizers`` library (None when the dir has none)."""
    from tokenizers import Tokenizer

    file = Path(path) / "tokenizer.json"
    return Tokenizer.from_file(str(file)) if file.exists() else None


__all__ = ["LLMEngine", "RequestState", "load_tokenizer"]
