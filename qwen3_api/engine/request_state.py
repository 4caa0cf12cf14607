"""A request's samples and what of them has been reported: the engine's per-request bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field

from qwen3_api.engine.outputs import CompletionOutput, RequestOutput
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.engine.sequence import Sequence


@dataclass(slots=True)
class RequestState:
    """A request's samples (sample 0 first; the others once forked) and what of them has been reported."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    stream: bool
    seqs: list[Sequence] = field(default_factory=list)
    emitted: dict[int, int] = field(default_factory=dict)  # sample index -> output tokens reported

    @property
    def finished(self) -> bool:
        return len(self.seqs) == self.params.n and all(s.is_finished for s in self.seqs)

    def make_output(self, *, final: bool) -> RequestOutput:
        """The request's output now: in a stream only the samples with news, each with its new tokens (delta
        mode); else every sample with all its tokens."""
        outs = []
        for seq in sorted(self.seqs, key=lambda s: s.index):
            start = self.emitted.get(seq.index, 0) if self.stream else 0
            n_out = seq.num_output_tokens
            if self.stream and start == n_out and not (seq.finish_reason and final):
                continue  # nothing new for this sample
            self.emitted[seq.index] = n_out
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
            request_id=self.request_id,
            prompt_token_ids=self.prompt_token_ids,
            num_cached_tokens=self.seqs[0].num_cached_tokens,
            outputs=outs,
            finished=final,
        )
