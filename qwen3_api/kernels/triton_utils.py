"""What the Triton kernels share: whether they run in the interpreter (TRITON_INTERPRET=1, CPU tensors)."""

from __future__ import annotations

import os


def interpreting() -> bool:
    """True under TRITON_INTERPRET=1, whose CPU tl.dot mis-reads bf16 operands (seen with triton 3.9): the
    kernels then upcast dot operands to float32; loads, stores and bf16 rounding of intermediates are kept."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
