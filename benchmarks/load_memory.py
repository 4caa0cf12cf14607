"""Peak memory while loading a ~1 GB bf16 checkpoint: our loader vs transformers' from_pretrained.

Each load runs in a fresh subprocess that reports its peak resident set (VmHWM from /proc/self/status)
before and after loading; the difference is what loading cost. The checkpoint is a random MoE written by
make_tiny_model with widths chosen to make ~1 GB.

    python benchmarks/load_memory.py [--dir /tmp/qwen3-1gb] [--layers 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time, torch

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
which, path = sys.argv[1], sys.argv[2]
if which == "ours":
    from qwen3_api.model.loader import load_model
else:
    from transformers import AutoModelForCausalLM
before = hwm()
start = time.perf_counter()
if which == "ours":
    model, _ = load_model(path, dtype=torch.bfloat16, progress=False)
else:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
seconds = time.perf_counter() - start
size = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"before": before, "after": hwm(), "model_bytes": size, "seconds": seconds}))
"""


def measure(which: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, which, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/qwen3-api-load-bench"))
    parser.add_argument("--layers", type=int, default=5)
    args = parser.parse_args()
    path = args.dir
    if not (path / "model.safetensors").exists():
        from qwen3_api.demo.tiny import make_tiny_model

        start = time.perf_counter()
        make_tiny_model(path, layers=args.layers, hidden=1024, experts=64, top_k=4, heads=8, kv_heads=4,
                        head_dim=128, intermediate=2048, moe_intermediate=512, dtype="bfloat16")  # fmt: skip
        print(f"wrote {path} in {time.perf_counter() - start:.1f}s")
    file_bytes = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    gib = 1 << 30
    print(f"checkpoint: {file_bytes / gib:.2f} GiB of safetensors (bf16), loaded as bf16 on CPU")
    print(f"{'loader':<14}{'model GiB':>10}{'peak RSS +GiB':>15}{'peak/model':>12}{'seconds':>9}")
    results = {}
    for which in ("ours", "transformers"):
        r = measure(which, path)
        results[which] = r
        extra = r["after"] - r["before"]
        print(f"{which:<14}{r['model_bytes'] / gib:>10.2f}{extra / gib:>15.2f}{extra / r['model_bytes']:>12.2f}"
              f"{r['seconds']:>9.2f}")  # fmt: skip
    ours, ref = results["ours"], results["transformers"]
    ratio = (ref["after"] - ref["before"]) / max(ours["after"] - ours["before"], 1)
    print(f"transformers' peak increase / ours: {ratio:.2f}x")


if __name__ == "__main__":
    main()
