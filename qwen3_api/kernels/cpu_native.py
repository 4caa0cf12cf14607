"""The native CPU decode kernels (cpu_native.cpp), compiled on first use, with the torch path as fallback.

Built once per machine by torch.utils.cpp_extension (a C++ compiler and ninja are needed; ~5 s) into torch's
extension cache (TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions). The build is tuned for the CPU
it runs on (-march=native), so the CPU's feature flags are part of the extension's name: a cache shared by
different machines never loads code built for another CPU. Without a compiler, or with QWEN3_API_CPU_NATIVE=off,
`ops()` is None and the kernels fall back to torch's matmuls (same results, slower one-row decodes).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_native.cpp")
HEADERS = [SOURCE.with_name(n) for n in ("cpu_common.h", "cpu_attention.h")]


def _sources_digest() -> str:
    """The source and its headers: a new extension name (a fresh build) whenever one of them changes."""
    h = hashlib.sha256()
    for f in [SOURCE, *HEADERS]:
        h.update(f.read_bytes())
    return h.hexdigest()[:8]


def _cpu_tag() -> str:
    """A short digest of this CPU's identity and features (what -march=native compiles for)."""
    ident = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith(("flags", "Features", "model name")):
                    ident += line
    except OSError:
        pass
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


@functools.cache
def ops() -> Any | None:
    """torch.ops.qwen3_api_cpu (linear_t, moe_decode) once built and loaded, or None where they cannot be."""
    if os.environ.get("QWEN3_API_CPU_NATIVE", "auto").lower() in ("0", "off", "false", "no"):
        return None
    try:
        from torch.utils.cpp_extension import load

        _put_ninja_on_path()
        load(
            name=f"qwen3_api_cpu_{_cpu_tag()}_{_sources_digest()}",
            sources=[str(SOURCE)],
            extra_include_paths=[str(SOURCE.parent)],
            extra_cflags=["-O3", "-march=native", "-fopenmp", "-DNDEBUG"],
            is_python_module=False,
            verbose=False,
        )
    except Exception as exc:  # no compiler, no ninja, an unsupported platform: run on torch's kernels
        logger.warning("native CPU kernels unavailable, using torch's (slower one-row decode): %s",
                       str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    logger.info("native CPU decode kernels loaded (%s)", SOURCE.name)
    return torch.ops.qwen3_api_cpu


def _put_ninja_on_path() -> None:
    """torch's builder runs `ninja` from PATH; the pip-installed one sits in the environment's bin, which is
    not on PATH when the server is started as .venv/bin/qwen3-api without activating the environment."""
    try:
        import ninja
    except ImportError:
        return
    path = os.environ.get("PATH", "")
    if ninja.BIN_DIR not in path.split(os.pathsep):
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + path
