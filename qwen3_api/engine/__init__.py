"""The inference engine: continuous batching over a paged KV cache with prefix caching (nano-vllm's shape).

Data flow of one step (``LLMEngine.step``): ``Scheduler.schedule`` returns a ``ScheduledBatch``, the running
sequences (one decode token or their next prompt chunk each) and the waiting ones admitted under
``max_num_batched_tokens``; ``ModelRunner.execute`` runs it as one flat batch; ``Sampler`` picks the next
tokens of the rows that sample; ``Scheduler.update`` appends them, forks and stops (``check_stop``); the
engine reports a ``StepResult`` (outputs, and requests that failed on their own). The server drives it
through ``AsyncLLMEngine`` (the ``EngineClient`` protocol); the KV cache is sized in ``kv_cache.py``.

Design choices worth knowing:

* Prefix caching publishes a full block as soon as the scheduler commits to computing it in the current
  step (after the step's last possible preemption), because every layer stores the step's K/V before its
  attention reads: a request admitted later in the same step can already reuse it. After a failed step the
  whole prefix cache is dropped.
* ``n > 1``: the request prefills once as sample 0; when that prefill completes, samples 1..n-1 are forked
  and share its full prompt blocks by reference count. They recompute only the last, partial prompt block
  (at most ``block_size`` tokens) instead of copying it, so no block is ever written by two sequences and
  no copy-on-write is needed. Their seats are reserved at admission.
* Preemption is by recompute: the newest running sequence loses its blocks and goes back to the front of the
  queue with its output so far; its sampler state (seeded generator, penalty counts, constraint) survives,
  so a preempted request produces exactly the tokens it would have produced without preemption.
"""
