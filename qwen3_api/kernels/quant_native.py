"""The quantized-matmul kernels for GGUF weights (quant_native.cpp), compiled at first use and checked first.

Built once per machine and source version by torch.utils.cpp_extension (a C++ compiler and ninja are needed;
~30 s) into torch's extension cache. The build is tuned for the CPU it runs on, so before the server loads it a
child process builds it and runs a self-test (every tensor type against the plain C++ dequantization): a CPU
that advertises instructions its hypervisor does not run (ggml's AMX path dies with SIGILL on these VMs; an
AVX-512 flag without the OS enabling the registers does the same) kills the child, not the server, and the next
build is tried: ``-march=native``, then AVX2 + FMA + F16C, then portable C++ (correct everywhere, slow). The
verdict is remembered beside the build, so later loads skip the child. QWEN3_API_QUANT_BUILD=native|avx2|portable
forces one. There is no torch fallback: GGUF weights stay quantized, and only these kernels read them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from qwen3_api.errors import StartupError
from qwen3_api.kernels.cpu_native import _cpu_tag, _put_ninja_on_path

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
SOURCES = [HERE / "quant_native.cpp"]
HEADERS = [HERE / "quant_blocks.h", HERE / "quant_dot.h"]
_FLAGS = {
    "native": ["-march=native"],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "portable": [],
}
_PROBE_TIMEOUT_S = 600


class QuantKernelsUnavailable(StartupError):
    """The kernels could not be built (no compiler, no ninja) or failed their self-test on every build."""


def _digest() -> str:
    """The sources' content and this CPU: a new name (a fresh build) whenever either changes."""
    h = hashlib.sha256(_cpu_tag().encode())
    for f in SOURCES + HEADERS:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _name(variant: str) -> str:
    return f"qwen3_api_quant_{variant}_{_digest()}"


def _build(variant: str) -> None:
    """Compile (or reuse) the variant and load it into this process: torch.ops.qwen3_api_quant."""
    from torch.utils.cpp_extension import load

    _put_ninja_on_path()
    load(
        name=_name(variant),
        sources=[str(s) for s in SOURCES],
        extra_cflags=["-O3", "-fopenmp", "-DNDEBUG", *_FLAGS[variant]],
        extra_include_paths=[str(HERE)],
        is_python_module=False,
        verbose=False,
    )


def _marker(variant: str) -> Path:
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(_name(variant), verbose=False)) / "self-test-passed"


def self_test() -> None:
    """Every tensor type through qlinear against dequant @ the activations the kernel saw; raises on a mismatch."""
    from qwen3_api.kernels.quant_types import QUANT_TYPES, random_blocks

    ops = torch.ops.qwen3_api_quant
    gen = torch.Generator().manual_seed(0)
    for qtype in QUANT_TYPES.values():
        rows, cols = 8, 512
        raw = random_blocks(qtype, rows, cols, gen)
        x = torch.randn(5, cols, generator=gen)
        got = ops.qlinear(x, [raw], [qtype.id], [rows])
        want = ops.act_roundtrip(x, qtype.id) @ ops.dequant(raw, qtype.id, rows, cols).T
        err = (got - want).abs().max().item()
        tol = 1e-4 * max(1.0, want.abs().max().item())
        if not err <= tol:
            raise AssertionError(f"{qtype.name}: qlinear differs from the dequantized product by {err:.3g}")


def _probe_in_child(variant: str) -> bool:
    """Build the variant and run the self-test in a child process; True when it passed."""
    code = f"from qwen3_api.kernels.quant_native import _child; _child({variant!r})"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=_PROBE_TIMEOUT_S, env={**os.environ, "QWEN3_API_QUANT_CHILD": "1"})
    except subprocess.TimeoutExpired:
        logger.warning("quantized kernels (%s): the build or self-test took over %d s", variant, _PROBE_TIMEOUT_S)
        return False
    if proc.returncode == 0:
        return True
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    logger.warning("quantized kernels (%s) unusable on this CPU: %s", variant, tail[0])
    return False


def _child(variant: str) -> None:
    """In the child: build, self-test, and leave the marker that spares later loads this check."""
    _build(variant)
    self_test()
    _marker(variant).write_text("ok\n")


@functools.cache
def ops() -> Any:
    """torch.ops.qwen3_api_quant (qlinear, moe, embed, dequant, act_roundtrip, simd), built and checked once.

    Raises QuantKernelsUnavailable when no build works (e.g. no C++ compiler)."""
    forced = os.environ.get("QWEN3_API_QUANT_BUILD", "").strip().lower()
    variants = [forced] if forced in _FLAGS else list(_FLAGS)
    if forced and forced not in _FLAGS:
        logger.warning("QWEN3_API_QUANT_BUILD=%s is not one of %s: trying them in order", forced, list(_FLAGS))
    for variant in variants:
        try:
            if not _marker(variant).exists() and not _probe_in_child(variant):
                continue
            _build(variant)
        except Exception as exc:  # no compiler / ninja: nothing to try
            raise QuantKernelsUnavailable(
                f"could not build the quantized CPU kernels ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                "serving GGUF files needs a C++ compiler (g++) and ninja"
            ) from exc
        logger.info("quantized CPU kernels loaded (%s build)", variant)
        if variant != "native":
            logger.warning("quantized kernels run the %s build: slower than this CPU could be", variant)
        return torch.ops.qwen3_api_quant
    raise QuantKernelsUnavailable("the quantized CPU kernels failed their self-test on every build "
                                  f"({', '.join(variants)}); see the warnings above")
