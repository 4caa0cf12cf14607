"""The quantized-matmul kernels for GGUF weights (quant_native.cpp), compiled at first use and checked first.

Built once per machine and source version by torch.utils.cpp_extension (a C++ compiler and ninja are needed;
~30 s) into torch's extension cache. The build is tuned for the CPU it runs on, so before the server loads it a
child process builds it and runs a self-test (every tensor type against the plain C++ dequantization): a CPU
that advertises instructions its hypervisor does not run (ggml's AMX path dies with SIGILL on these VMs; an
AVX-512 flag without the OS enabling the registers does the same) kills the child, not the server, and the next
build is tried: ``-march=native``, then AVX2 + FMA + F16C, then portable C++ (correct everywhere, slow). The
verdict is remembered beside the build, so later loads skip the child. QWEN3_API_QUANT_BUILD=native|avx2|portable
forces one. There is no torch fallback: GGUF weights stay quantized, and only these kernels read them.

Products with many activation rows (prefill, well-filled MoE experts) run as bf16 GEMMs on oneDNN's micro-
kernels where the CPU multiplies bf16 natively (AMX or AVX512-BF16; quant_gemm_bf16.h). The same child checks
that path after the int8 one; a CPU whose hypervisor hides the registers the flags advertise kills the child
there, and the int8 kernels are used for everything. QWEN3_API_QUANT_BF16=off turns the bf16 path off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from qwen3_api.errors import StartupError
from qwen3_api.kernels.cpu_native import _cpu_tag, _put_ninja_on_path

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
SOURCES = [HERE / "quant_native.cpp"]
HEADERS = [HERE / n for n in ("quant_blocks.h", "quant_dot.h", "quant_gemm_bf16.h", "quant_jobs.h", "quant_moe.h")]
# Activation rows from which the bf16 GEMM beats the int8 products (benchmarks/RESULTS.md): with AMX tiles
# (Sapphire Rapids: 0.9x at 16 rows, 1.1-1.5x at 32) and with AVX512-BF16 alone (Zen 4: 0.57x at 16, 0.90x
# at 32, 1.09x at 48, 1.18x at 64 on Q4_K 2048x2048).
BF16_MIN_ROWS_AMX = 16
BF16_MIN_ROWS_AVX512 = 48
_FLAGS = {
    "native": ["-march=native"],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "portable": [],
}
_PROBE_TIMEOUT_S = 600
_BF16_READY: list[bool] = []  # set by ops(): whether the bf16 GEMM path passed its check here


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


def _marker(variant: str, name: str = "self-test-passed") -> Path:
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(_name(variant), verbose=False)) / name


def bf16_supported() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX tiles or AVX512-BF16) and the path is not turned off."""
    if os.environ.get("QWEN3_API_QUANT_BF16", "").strip().lower() in ("0", "off", "false", "no"):
        return False
    cpu = torch.cpu
    flags = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(flag() for flag in flags if flag is not None)


def bf16_min_rows() -> int:
    """Where the bf16 GEMM path takes over on this CPU; QWEN3_API_QUANT_BF16_MIN_ROWS=N overrides."""
    forced = os.environ.get("QWEN3_API_QUANT_BF16_MIN_ROWS", "").strip()
    if forced.isdigit() and int(forced) > 0:
        return int(forced)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return BF16_MIN_ROWS_AMX if amx is not None and amx() else BF16_MIN_ROWS_AVX512


def _init_amx() -> None:
    """Ask Linux for the AMX tile state (arch_prctl) before oneDNN's kernels use it; harmless without AMX."""
    init = getattr(torch._C._cpu, "_init_amx", None)
    if init is not None:
        init()


def self_test(bf16: bool = False) -> None:
    """Every tensor type through qlinear against the dequantized product of the activations the kernel saw
    (int8 blocks; or bf16 with ``bf16``, the GEMM path forced on for the test); raises on a mismatch."""
    from qwen3_api.kernels.quant_types import QUANT_TYPES, random_blocks

    ops = torch.ops.qwen3_api_quant
    gen = torch.Generator().manual_seed(0)
    was = ops.bf16_gemm_enabled()
    ops.set_bf16_gemm(bf16, 1)
    try:
        for qtype in QUANT_TYPES.values():
            rows, cols = 8, 512
            raw = random_blocks(qtype, rows, cols, gen)
            x = torch.randn(5, cols, generator=gen)
            got = ops.qlinear(x, [raw], [qtype.id], [rows])
            w = ops.dequant(raw, qtype.id, rows, cols)
            if bf16 and qtype.name not in ("F32", "F16", "BF16"):
                want = x.bfloat16().float() @ w.bfloat16().float().T
            else:
                want = ops.act_roundtrip(x, qtype.id) @ w.T
            err = (got - want).abs().max().item()
            tol = 1e-4 * max(1.0, want.abs().max().item())
            if not err <= tol:
                kind = "bf16 GEMM" if bf16 else "qlinear"
                raise AssertionError(f"{qtype.name}: {kind} differs from the dequantized product by {err:.3g}")
    finally:
        ops.set_bf16_gemm(was, bf16_min_rows())


def _probe_in_child(variant: str) -> bool:
    """Build the variant and run the self-tests in a child process; True when the int8 kernels passed (the bf16
    path's verdict is left in its own markers)."""
    code = f"from qwen3_api.kernels.quant_native import _child; _child({variant!r})"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=_PROBE_TIMEOUT_S, env={**os.environ, "QWEN3_API_QUANT_CHILD": "1"})
    except subprocess.TimeoutExpired:
        logger.warning("quantized kernels (%s): the build or self-test took over %d s", variant, _PROBE_TIMEOUT_S)
        return False
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    if _marker(variant).exists():  # the int8 kernels passed; a failure after that was the bf16 path's
        if proc.returncode != 0:
            logger.warning("bf16 GEMM unusable on this CPU (%s): the int8 kernels run every product", tail[0])
        return True
    logger.warning("quantized kernels (%s) unusable on this CPU: %s", variant, tail[0])
    return False


def _child(variant: str) -> None:
    """In the child: build, self-test, and leave the markers that spare later loads these checks: the int8
    kernels first, then the bf16 GEMM where the CPU advertises it (tried once: a crash leaves "attempted" only)."""
    _build(variant)
    self_test()
    _marker(variant).write_text("ok\n")
    if bf16_supported() and torch.ops.qwen3_api_quant.bf16_gemm_built():
        _marker(variant, "bf16-attempted").write_text("ok\n")
        _init_amx()
        self_test(bf16=True)
        _marker(variant, "bf16-passed").write_text("ok\n")


def _enable_bf16(variant: str) -> bool:
    """Turn the bf16 GEMM path on when this CPU passed its check (run now if it never ran for this build)."""
    if not bf16_supported() or not torch.ops.qwen3_api_quant.bf16_gemm_built():
        return False
    if not _marker(variant, "bf16-attempted").exists():
        _probe_in_child(variant)
    if not _marker(variant, "bf16-passed").exists():
        return False
    _init_amx()
    return torch.ops.qwen3_api_quant.set_bf16_gemm(True, bf16_min_rows())


@contextlib.contextmanager
def bf16_gemm(enabled: bool, min_rows: int | None = None) -> Iterator[bool]:
    """Within the block, the bf16 GEMM path on (where this CPU passed its check) or off, from ``min_rows``
    activation rows (default: this CPU's, bf16_min_rows); yields whether it is on. For tests and benchmarks:
    the server sets it once at load."""
    kernels = ops()
    was = kernels.bf16_gemm_enabled()
    on = kernels.set_bf16_gemm(enabled and bf16_ready(), min_rows or bf16_min_rows())
    try:
        yield on
    finally:
        kernels.set_bf16_gemm(was, bf16_min_rows())


def bf16_ready() -> bool:
    """Whether this CPU passed the bf16 GEMM check (and the path is not turned off): what ops() turned on."""
    ops()
    return _BF16_READY[0] if _BF16_READY else False


@functools.cache
def ops() -> Any:
    """torch.ops.qwen3_api_quant (qlinear, moe, embed, dequant, act_roundtrip, simd, set_bf16_gemm, ...), built
    and checked once; the bf16 GEMM path turned on where this CPU passed its check.

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
        bf16 = _enable_bf16(variant)
        _BF16_READY[:] = [bf16]
        logger.info("quantized CPU kernels loaded (%s build%s)", variant, ", bf16 GEMM for large products" if bf16 else "")
        if variant != "native":
            logger.warning("quantized kernels run the %s build: slower than this CPU could be", variant)
        return torch.ops.qwen3_api_quant
    raise QuantKernelsUnavailable("the quantized CPU kernels failed their self-test on every build "
                                  f"({', '.join(variants)}); see the warnings above")
