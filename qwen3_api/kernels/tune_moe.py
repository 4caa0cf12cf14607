"""`python -m qwen3_api.kernels.tune_moe`: the fused-MoE tuner, run from a source checkout.

The tuner is a benchmark (it times the Triton kernels on a GPU and writes the tables in kernels/moe_configs/), so
its code lives with the benchmarks (benchmarks/tune_moe.py), as vLLM keeps its own; this module only launches it,
so the command that the H200 procedure names keeps working.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tune_moe.py"


def main() -> None:
    """Run benchmarks/tune_moe.py with this command's arguments."""
    if not SCRIPT.exists():
        sys.exit(f"qwen3-api: error: the MoE tuner is a benchmark of the source checkout ({SCRIPT} is missing): "
                 "run it from a clone of the repository")
    sys.argv[0] = str(SCRIPT)
    runpy.run_path(str(SCRIPT), run_name="__main__")


if __name__ == "__main__":
    main()
