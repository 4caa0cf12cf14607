"""Shared pieces of the GGUF benchmarks (gguf_decode.py, gguf_prefill.py, gguf_serve.py): llama.cpp's tools,
our engine in a child process, medians and the printed table.

Both sides run the same GGUF file with the same threads on the same machine, one process at a time (the real
shape's 17 GB file leaves no room for two engines' working sets in 24 GB), in alternating rounds so that the
shared machine's background load hits both alike; the tables quote medians over rounds.

llama.cpp's binaries come from --llama-bin (default $LLAMA_CPP_BIN, else /work/llamacpp/build/bin): build them
from the llama-cpp-python sdist as benchmarks/RESULTS.md says (GGML_NATIVE=OFF, the ISA flags this CPU has).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import qwen3_api  # noqa: F401  (first: its OMP_WAIT_POLICY default must be in place before torch loads)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LLAMA_BIN = Path(os.environ.get("LLAMA_CPP_BIN", "/work/llamacpp/build/bin"))
VOCAB_SAMPLE = 151_643  # random prompt tokens: ordinary (non-special) ids of the Qwen3 vocabulary


def llama_tool(bin_dir: Path, name: str) -> Path:
    """Path of a llama.cpp binary; exits with a clear message when it is missing."""
    path = Path(bin_dir) / name
    if not path.exists():
        sys.exit(f"{path} not found: build llama.cpp (see benchmarks/RESULTS.md) or pass --llama-bin DIR")
    return path


def run_child(script: Path, args: list[str], timeout: float = 3600) -> dict:
    """Run ``script --child ARGS`` (our engine, alone in its process); its last stdout line is a JSON result."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(script), "--child", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        sys.exit(f"our side failed ({proc.returncode}): {proc.stderr.strip()[-3000:]}")
    return json.loads(lines[-1])


def peak_rss_gib(pid: int | str = "self") -> float:
    """Peak resident memory (VmHWM) of a process, GiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def rss_gib(pid: int | str = "self") -> float:
    """Current resident memory (VmRSS) of a process, GiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def row(label: str, ours: list[float], theirs: list[float], unit: str, higher_is_better: bool, target: str) -> str:
    """One table line: medians of both sides, the ratio ours / llama.cpp, the samples and the target."""
    o, t = median(ours), median(theirs)
    ratio = o / t if t else float("nan")
    verdict = (ratio >= float(target[2:]) if higher_is_better else ratio <= float(target[2:])) if target else None
    mark = "" if verdict is None else ("  MET" if verdict else "  NOT MET")
    samples = f"ours {fmt(ours)} llama.cpp {fmt(theirs)}"
    return f"{label:<28} {o:>10.4g} {t:>10.4g} {unit:<8} {ratio:>6.3f}x  target {target}{mark}\n    {samples}"


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def header() -> str:
    return f"{'':<28} {'ours':>10} {'llama.cpp':>10} {'unit':<8} {'ratio':>7}"


def now() -> float:
    return time.perf_counter()


def run_with_rusage(cmd: list[str], timeout: float = 3600) -> tuple[int, str, str, float]:
    """(exit status, stdout, stderr, peak RSS in GiB) of a command, the peak from the kernel's accounting."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        deadline = now() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if now() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), usage.ru_maxrss / 2**20


def llama_bench_rusage(bin_dir: Path, model: Path, threads: int, *, prompt: int = 0, gen: int = 0,
                       depth: int = 0, reps: int = 1) -> tuple[list[float], float]:
    """llama-bench's seconds per rep of its one test (pp``prompt`` or tg``gen`` after ``depth`` tokens of
    context), and the peak resident memory (GiB) of the llama-bench process."""
    cmd = [str(llama_tool(bin_dir, "llama-bench")), "-m", str(model), "-t", str(threads), "-p", str(prompt),
           "-n", str(gen), "-d", str(depth), "-r", str(reps), "-o", "json"]
    code, out, err, rss = run_with_rusage(cmd)
    if code != 0:
        sys.exit(f"llama-bench failed ({code}): {err.strip()[-2000:]}")
    tests = [t for t in json.loads(out) if t["n_prompt"] == prompt and t["n_gen"] == gen]
    return [ns / 1e9 for ns in tests[0]["samples_ns"]], rss


# ---- our engine, in the child process ---------------------------------------------------------------------

def load_engine(gguf: Path, threads: int, max_len: int, prefix_caching: bool = False):  # noqa: ANN201
    """(engine, load seconds): the GGUF model (memory-mapped, quantized kernels built and checked) under
    LLMEngine on the CPU with room for one sequence of ``max_len`` tokens."""
    import torch

    from qwen3_api.engine.args import EngineArgs
    from qwen3_api.engine.llm_engine import LLMEngine
    from qwen3_api.kernels.quant_native import ops
    from qwen3_api.model.loader import load_model

    torch.set_num_threads(threads)
    ops()  # build / self-test outside the timed load (a one-off per machine)
    start = now()
    model, config = load_model(gguf, progress=False)
    load_s = now() - start
    args = EngineArgs(model="bench", dtype="float32", device="cpu", enable_prefix_caching=prefix_caching,
                      max_model_len=max_len, max_num_seqs=1)
    engine = LLMEngine(model, config, args, vocab_size=VOCAB_SAMPLE, num_blocks=max_len // 16 + 8)
    return engine, load_s


def random_prompt(n: int, seed: int) -> list[int]:
    import random

    rng = random.Random(seed)
    return [rng.randrange(VOCAB_SAMPLE) for _ in range(n)]


def generate(engine, prompt: list[int], new_tokens: int, rid: str) -> tuple[float, float]:  # noqa: ANN001
    """(seconds of the first step: prefill + first token, seconds of the remaining decode steps)."""
    from qwen3_api.engine.sampling_params import SamplingParams

    engine.add_request(rid, prompt, SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True),
                       stream=True)
    start = now()
    first = None
    produced = 0
    while engine.has_unfinished_requests():
        for out in engine.step().outputs:
            produced += len(out.outputs[0].token_ids)
        if first is None and produced:
            first = now() - start  # the step that finished the prompt produced the first token
    total = now() - start
    assert produced == new_tokens, f"generated {produced} tokens, asked for {new_tokens}"
    return first, total - first
