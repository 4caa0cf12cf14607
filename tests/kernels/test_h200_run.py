"""benchmarks/h200_run.py, issue 16's Part B in one run, checked without a GPU: every step's command line is
accepted by its script's parser, the plan covers the issue's four steps within the lease, and the runner cuts a
step at its deadline (SIGINT first, so a step can clean up), skips what no time is left for, and packs its
results into the three files the device tool brings back."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tarfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # the scripts import each other with benchmarks/ on sys.path
    sys.path.insert(0, str(BENCHMARKS))
h200_run = importlib.import_module("h200_run")


class Parsed(Exception):
    """Raised instead of running a script once its parser has accepted the arguments."""


@pytest.mark.parametrize("smoke", [False, True])
def test_every_step_is_accepted_by_its_script(monkeypatch, tmp_path, smoke):
    real_parse = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):  # noqa: ANN001, ANN202
        raise Parsed(real_parse(self, args, namespace))  # a bad flag or choice exits with 2 before this

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    scripts = {"benchmarks/gpu_check.py": "gpu_check", "benchmarks/gpu_check_fp8.py": "gpu_check_fp8",
               "qwen3_api.kernels.tune_moe": "tune_moe", "benchmarks/gpu_decode.py": "gpu_decode",
               "benchmarks/gpu_serve_e2e.py": "gpu_serve_e2e"}  # fmt: skip
    seen = set()
    for step in h200_run.plan(tmp_path, smoke):
        if step.argv[1] == "-c":  # the versions probe: Python that must at least compile
            compile(step.argv[2], step.name, "exec")
            continue
        script = step.argv[2] if step.argv[1] == "-m" else step.argv[1]
        module = importlib.import_module(scripts[script])
        with pytest.raises(Parsed) as parsed:
            module.main(step.argv[3:] if step.argv[1] == "-m" else step.argv[2:])
        seen.add(script)
        if step.name.startswith("tune"):
            ns = parsed.value.args[0]
            assert (ns.num_experts, ns.intermediate, ns.top_k, ns.space) == (128, 768, 8, "quick")
    assert seen == set(scripts)


def test_the_plan_covers_the_four_steps_of_part_b_within_the_lease(tmp_path):
    steps = {s.name: s for s in h200_run.plan(tmp_path, smoke=False)}
    assert sum(s.budget_s for s in steps.values()) <= 540
    assert {"--dtype bf16", "--dtype fp8"} <= {" ".join(s.argv[-2:]) for n, s in steps.items() if "tune" in n}
    tuned = steps["tune_moe_fp8"].argv
    sizes = [int(x) for x in tuned[tuned.index("--batch-sizes") + 1 : tuned.index("--dtype")]]
    assert sizes[:4] == [1, 64, 16, 256] and min(sizes) == 1 and max(sizes) == 4096  # decode sizes first
    for name in ("decode_bf16", "decode_fp8"):
        line = " ".join(steps[name].argv)
        assert "--batch-sizes 1 16 64 256" in line and "--prompt-len 1024 8192 32768" in line
    assert "--no-transformers" not in " ".join(steps["decode_bf16"].argv)  # transformers beside bf16
    assert all("--no-cuda-graphs" in steps[n].argv for n in ("decode_bf16_eager", "decode_fp8_eager"))
    e2e = " ".join(steps["serve_e2e_fp8"].argv)
    assert "--streams 64" in e2e and "--quant fp8" in e2e and "--kv-cache-dtype fp8" in e2e


def test_a_step_over_its_deadline_is_interrupted_and_may_clean_up(tmp_path):
    code = ("import time\nprint('started', flush=True)\ntry:\n    time.sleep(60)\n"
            "except KeyboardInterrupt:\n    print('cleaned up', flush=True)\n    raise\n")  # fmt: skip
    step = h200_run.Step("sleepy", [sys.executable, "-c", code], 1)
    rc, seconds, text = h200_run.run_step(step, 1.5, tmp_path / "log.txt", {})
    assert rc is None and seconds < 15
    assert "started" in text and "cleaned up" in text
    assert "sleepy: TIMED OUT" in (tmp_path / "log.txt").read_text()


def test_the_run_packs_three_files_and_skips_what_no_time_is_left_for(tmp_path, monkeypatch):
    work, out = tmp_path / "work", tmp_path / "out"
    monkeypatch.setenv("H200_WORK", str(work))

    def fake_plan(work_dir: Path, smoke: bool) -> list:
        table = "print('| decode, single stream | 450 | 700 | 64% |  | 20 | >= 400: met |')"
        result = f"open({str(work_dir / 'decode_bf16.json')!r}, 'w').write('[]')"
        return [
            h200_run.Step("versions", [sys.executable, "-c", "print('VERSIONS {\"gpu\": \"fake\"}')"], 3),
            h200_run.Step("decode_bf16", [sys.executable, "-c", f"{table}\n{result}"], 3, ["decode_bf16.json"]),
            h200_run.Step("gpu_check", [sys.executable, "-c", "import time; time.sleep(60)"], 1),
            h200_run.Step("serve_e2e_fp8", [sys.executable, "-c", "print('never')"], 100),
        ]

    monkeypatch.setattr(h200_run, "plan", fake_plan)
    monkeypatch.setattr(h200_run, "MIN_STEP_S", 1.0)
    # 15 s are kept for packing: 19 s leave 4 s, so gpu_check (due at 7 s) is cut at 4 s, and nothing is left
    assert h200_run.main(["--out", str(out), "--budget-s", "19"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["h200_log.txt", "h200_results.tgz", "h200_summary.md"]
    summary = (out / "h200_summary.md").read_text()
    assert '"gpu": "fake"' in summary and "| decode, single stream | 450 |" in summary
    assert "| versions | ok |" in summary and "| gpu_check | TIMED OUT |" in summary
    assert "| serve_e2e_fp8 | skipped (no time left) |" in summary
    with tarfile.open(out / "h200_results.tgz") as tar:
        names = tar.getnames()
    assert "decode_bf16.json" in names and "h200_log.txt" in names
    records = json.loads((work / "h200_records.json").read_text())
    assert [r["rc"] for r in records] == [0, 0, None, "skipped"]
