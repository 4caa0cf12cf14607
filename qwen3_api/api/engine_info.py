"""Facts about the local engine for people: its precision, and its completion tokens per second."""

from __future__ import annotations

from collections import deque
from typing import Any

# torch dtype names as catalogs (OpenRouter's "quantization") write them.
_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def engine_precision(engine: Any) -> str | None:
    """The local engine's compute dtype (``fp32`` / ``bf16`` / ``fp16``): its "quantization" when it serves
    the weights unquantized; None when the engine does not say (a test double). Quantized weights report their
    own name instead (a GGUF file's type mix: ``Q4_K_M``), as OpenRouter's endpoints do."""
    quantization = getattr(getattr(engine, "model_config", None), "quantization", None)
    if isinstance(quantization, str) and quantization:
        return quantization
    dtype = getattr(getattr(engine, "engine", None), "dtype", None)
    if dtype is None:
        return None
    name = str(dtype).removeprefix("torch.")
    return _PRECISION.get(name, name)


class TokenRate:
    """Completion tokens per second over the last ``window_s`` seconds or more, from the metrics' counter as
    sampled by the callers (a console polling every few seconds): no work per token, no background task."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, float]] = deque(maxlen=1000)

    def rate(self, total: float, now: float) -> float | None:
        """The rate since the base sample; None until two samples are half a second apart."""
        self.samples.append((now, total))
        # Keep one sample at least window_s old (the base) and every newer one.
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()
        t0, c0 = self.samples[0]
        return None if now - t0 < 0.5 else max(0.0, (total - c0) / (now - t0))
