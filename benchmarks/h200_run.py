"""Issue 16, Part B, in one run that fits a short H200 lease: every step under its own time budget, all results
and versions packed into --out (the device tool's $OUT: at most 8 files come back, so three are written).

Steps, in the issue's order (budgets are cumulative deadlines: a step that ends early leaves its time to the
next ones; a step over its deadline is interrupted, SIGINT then SIGKILL, and the run goes on):

1. versions (GPU, driver, CUDA, torch, triton, transformers), then ``gpu_check.py`` (every Triton kernel vs its
   torch reference, greedy tokens of a tiny checkpoint vs the CPU) and ``gpu_check_fp8.py`` (the block-FP8
   GEMMs, the FP8 KV cache and an FP8 checkpoint through the engine);
2. ``python -m qwen3_api.kernels.tune_moe`` at E=128, N=768, top-8, bf16 and fp8, quick space, the decode batch
   sizes first (the tables are rewritten after each size, and written into the package, so the decode steps
   below use them);
3. ``gpu_decode.py`` at the real shape with random weights: bf16 with CUDA graphs and transformers beside it,
   block-FP8 (W8A8) with CUDA graphs, both again without graphs (batch 1 and 64), decode tok/s at batch 1, 16,
   64, 256 and TTFT for 1K / 8K / 32K prompts;
4. ``gpu_serve_e2e.py``: `qwen3-api serve` on an FP8 checkpoint of the real shape (8 of its 48 layers, random
   weights), FP8 KV cache, through the OpenAI SDK: thinking, tools, a JSON schema, 64 concurrent streams.

Files written to --out: ``h200_summary.md`` (versions, each step's status and time, the decode tables, the e2e
results), ``h200_log.txt`` (every step's output), ``h200_results.tgz`` (the JSON results, the tuned MoE tables,
the logs).

    python benchmarks/h200_run.py --out "$OUT"                  # on the H200 (about 9 minutes)
    python benchmarks/h200_run.py --out /tmp/x --cpu-smoke      # every step's CPU smoke variant (code paths only)
    python benchmarks/h200_run.py --plan                        # print the commands and budgets, run nothing
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
MIN_STEP_S = 5.0  # a step with less time left than this is skipped (its start alone would use it up)
# decode-critical sizes first: a tuning cut short by its budget still covers them (lookups take the nearest)
TUNE_BATCHES = ["1", "64", "16", "256", "4", "1024", "4096", "32", "128", "8", "512", "2048", "2"]
VERSIONS = """
import json, platform, subprocess, torch, triton
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "triton": triton.__version__}
try:
    import transformers
    info["transformers"] = transformers.__version__
except ImportError:
    info["transformers"] = None
if torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name()
    info["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    info["gpu_memory_GiB"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["nvidia_smi"] = f"unavailable: {exc}"
print("VERSIONS " + json.dumps(info))
"""


@dataclass
class Step:
    """One command of the run: its name, argv, time budget (seconds), and the files it leaves in the work dir."""

    name: str
    argv: list[str]
    budget_s: float
    results: list[str] = field(default_factory=list)


def plan(work: Path, smoke: bool) -> list[Step]:
    """The steps of Part B (``smoke``: each step's --cpu-smoke variant, for a check of the code paths)."""
    smoke_flag = ["--cpu-smoke"] if smoke else []
    decode = [PY, "benchmarks/gpu_decode.py", *smoke_flag]
    batches = ["--batch-sizes", "1", "16", "64", "256"]
    tune = [PY, "-m", "qwen3_api.kernels.tune_moe", "--space", "quick", "--batch-sizes",
            *(["1", "4"] if smoke else TUNE_BATCHES), *smoke_flag]  # fmt: skip
    if smoke:  # the smoke tables go to the work dir; the real ones into the package (the decode steps use them)
        tune += ["--out-dir", str(work / "moe_configs")]

    def out(name: str) -> list[str]:
        return ["--json-out", str(work / name)]

    return [
        Step("versions", [PY, "-c", VERSIONS], 20),
        Step("gpu_check", [PY, "benchmarks/gpu_check.py", *smoke_flag], 65),
        Step("gpu_check_fp8", [PY, "benchmarks/gpu_check_fp8.py", *smoke_flag], 50),
        Step("tune_moe_bf16", [*tune, "--dtype", "bf16"], 50),
        Step("tune_moe_fp8", [*tune, "--dtype", "fp8"], 40),
        Step("decode_bf16", [*decode, *batches, "--prompt-len", "1024", "8192", "32768", "--hf-budget-s", "40",
                             *out("decode_bf16.json")], 110, ["decode_bf16.json"]),  # fmt: skip
        Step("decode_fp8", [*decode, "--quant", "fp8", *batches, "--prompt-len", "1024", "8192", "32768",
                            "--no-transformers", *out("decode_fp8.json")], 55, ["decode_fp8.json"]),  # fmt: skip
        Step("decode_bf16_eager", [*decode, "--no-cuda-graphs", "--no-transformers", "--batch-sizes", "1", "64",
                                   "--prompt-len", "1024", *out("decode_bf16_eager.json")], 25,
             ["decode_bf16_eager.json"]),  # fmt: skip
        Step("decode_fp8_eager", [*decode, "--quant", "fp8", "--no-cuda-graphs", "--no-transformers",
                                  "--batch-sizes", "1", "64", "--prompt-len", "1024", *out("decode_fp8_eager.json")],
             25, ["decode_fp8_eager.json"]),  # fmt: skip
        Step("serve_e2e_fp8", [PY, "benchmarks/gpu_serve_e2e.py", "--quant", "fp8", "--kv-cache-dtype", "fp8",
                               "--layers", "8", "--streams", "64", *smoke_flag, *out("serve_e2e_fp8.json")], 90,
             ["serve_e2e_fp8.json"]),  # fmt: skip
    ]


def run_step(step: Step, timeout_s: float, log: Path, env: dict[str, str]) -> tuple[int | None, float, str]:
    """Run one step in its own process group, its output going straight to ``log`` (so a run killed from outside
    still has it); (exit status or None when it was cut at ``timeout_s``, seconds taken, its output)."""
    start = time.monotonic()
    with open(log, "a") as f:
        f.write(f"\n===== {step.name}: {' '.join(step.argv)[:300]} (timeout {timeout_s:.0f} s)\n")
        offset = f.tell()
        proc = subprocess.Popen(step.argv, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                start_new_session=True)  # fmt: skip
        try:
            rc: int | None = proc.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            # SIGINT first: the e2e step's finally stops its server (its own process group) and frees the GPU
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = None
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    elapsed = time.monotonic() - start
    with open(log, "a") as f:
        f.write(f"\n===== {step.name}: {'TIMED OUT' if rc is None else f'exit {rc}'} after {elapsed:.1f} s\n")
    return rc, elapsed, text


def summarize(records: list[dict], work: Path) -> str:
    """The markdown summary: versions, steps, the decode tables and e2e results as the steps printed them."""
    lines = ["# Issue 16 Part B on the H200", ""]
    versions = next((r.get("versions") for r in records if r.get("versions")), None)
    lines += ["```", json.dumps(versions, indent=2) if versions else "versions: not read", "```", "",
              "| step | status | seconds |", "|---|---|---:|"]  # fmt: skip
    for r in records:
        status = "skipped (no time left)" if r["rc"] == "skipped" else "TIMED OUT" if r["rc"] is None else (
            "ok" if r["rc"] == 0 else f"FAILED (exit {r['rc']})")  # fmt: skip
        lines.append(f"| {r['name']} | {status} | {r['seconds']:.0f} |")
    for r in records:
        tail = r.get("tail", "")
        if r["name"].startswith(("decode", "gpu_check", "tune")) and tail:
            lines += ["", f"## {r['name']}", "", "```", tail, "```"]
    e2e = work / "serve_e2e_fp8.json"
    if e2e.exists():
        doc = json.loads(e2e.read_text())
        doc.pop("server_log_tail", None)
        lines += ["", "## serve_e2e_fp8", "", "```", json.dumps(doc, indent=2), "```"]
    return "\n".join(lines) + "\n"


def tail_of(text: str, step: str) -> str:
    """What a step's summary keeps of its output: the decode tables, the check lines, the tuned sizes."""
    keep = [
        line for line in text.splitlines()
        if line.startswith(("|", "ok ", "FAIL", "all ", "m=", "copy bandwidth", "wrote", "Traceback"))
        or "check(s) failed" in line or "Error" in line
    ]  # fmt: skip
    return "\n".join(keep[-60:]) if step != "versions" else ""


def pack(records: list[dict], work: Path, log: Path, out: Path) -> None:
    """Write the three result files into ``out`` from what the steps have left so far."""
    (work / "h200_records.json").write_text(json.dumps(records, indent=2) + "\n")
    (out / "h200_summary.md").write_text(summarize(records, work))
    (out / "h200_log.txt").write_bytes(log.read_bytes()[-(15 << 20):])  # under the 16 MiB a file
    tables = REPO / "qwen3_api" / "kernels" / "moe_configs"
    with tarfile.open(out / "h200_results.tgz", "w:gz") as tar:
        for path in sorted(work.glob("*.json")) + [log]:
            tar.add(path, arcname=path.name)
        for path in sorted(tables.glob("*.json")) + sorted((work / "moe_configs").glob("*.json")):
            tar.add(path, arcname=f"moe_configs/{path.name}")


def main(argv: list[str] | None = None) -> int:
    """Run the plan within --budget-s; 0 when every step ran and passed, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="where the three result files go ($OUT)")
    parser.add_argument("--budget-s", type=float, default=540, help="the whole run, packing included")
    parser.add_argument("--only", nargs="+", default=None, help="run these steps only (by name)")
    parser.add_argument("--cpu-smoke", action="store_true", help="every step's CPU smoke variant")
    parser.add_argument("--plan", action="store_true", help="print the steps and their budgets, run nothing")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.budget_s - 15  # keep 15 s to pack the results
    work = Path(os.environ.get("H200_WORK", "/tmp/h200_work"))
    steps = plan(work, args.cpu_smoke)
    if args.only:
        unknown = set(args.only) - {s.name for s in steps}
        if unknown:
            parser.error(f"unknown steps {sorted(unknown)}; the steps are {[s.name for s in steps]}")
        steps = [s for s in steps if s.name in args.only]
    if args.plan:
        for s in steps:
            print(f"{s.name:18s} {s.budget_s:5.0f} s  {' '.join(s.argv)[:160]}")
        print(f"total {sum(s.budget_s for s in steps):.0f} s of budgets, run budget {args.budget_s:.0f} s")
        return 0
    if args.out is None:
        parser.error("--out is required (unless --plan)")
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = work / "h200_log.txt"
    log.write_text("")
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p)}  # fmt: skip
    env.setdefault("QWEN3_API_HOME", str(work / "home"))
    records: list[dict] = []
    start, planned = time.monotonic(), 0.0
    for step in steps:
        planned += step.budget_s
        left = min(start + planned, deadline) - time.monotonic()  # the cumulative deadline of this step
        if left < MIN_STEP_S:
            records.append({"name": step.name, "rc": "skipped", "seconds": 0.0})
            continue
        rc, seconds, text = run_step(step, left, log, env)
        record = {"name": step.name, "rc": rc, "seconds": round(seconds, 1), "tail": tail_of(text, step.name)}
        if step.name == "versions":
            found = [line for line in text.splitlines() if line.startswith("VERSIONS ")]
            record["versions"] = json.loads(found[-1].removeprefix("VERSIONS ")) if found else None
        records.append(record)
        print(f"{step.name}: {'TIMED OUT' if rc is None else f'exit {rc}'} after {seconds:.0f} s", flush=True)
        if record["tail"]:
            print(record["tail"], flush=True)  # the device tool shows the end of this output
        pack(records, work, log, args.out)  # after every step: a run killed from outside keeps what it finished
    pack(records, work, log, args.out)
    passed = all(r["rc"] == 0 for r in records)
    print(f"wrote {args.out}/h200_summary.md, h200_log.txt, h200_results.tgz: "
          f"{'every step passed' if passed else 'some steps failed, timed out or were skipped'}")  # fmt: skip
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
