"""Kernel tests run the Triton kernels on CPU tensors through Triton's interpreter when no GPU is present."""

from __future__ import annotations

import os

# Must happen before triton is first imported anywhere in the test session.
os.environ.setdefault("TRITON_INTERPRET", "1")
