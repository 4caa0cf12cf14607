"""benchmarks/tune_moe.py end to end on CPU: it times candidates, checks the winner, writes a loadable table."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from qwen3_api.kernels import moe_config_table

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # the scripts import each other with benchmarks/ on sys.path
    sys.path.insert(0, str(BENCHMARKS))
tune_moe = importlib.import_module("tune_moe")


def test_cpu_smoke_writes_a_table_the_lookup_reads(tmp_path):
    assert tune_moe.main(["--cpu-smoke", "--batch-sizes", "1", "3", "--out-dir", str(tmp_path)]) == 0
    files = list(tmp_path.glob("*.json"))
    assert [f.name for f in files] == ["E=4,N=32,dtype=fp32,device_name=cpu.json"]
    doc = json.loads(files[0].read_text())
    assert set(doc["configs"]) == {"1", "3"} and doc["tuned_here"] is False
    assert all(doc["timings_us"][m] > 0 for m in ("1", "3"))
    chosen = moe_config_table.get_moe_config(3, 4, 32, torch.float32, device_name="cpu", config_dir=tmp_path)
    assert chosen == doc["configs"]["3"]


def test_candidate_space_prunes_tall_tiles_for_small_batches():
    small = tune_moe.candidate_configs(1, 128, 8)
    large = tune_moe.candidate_configs(4096, 128, 8)
    assert {c["BLOCK_SIZE_M"] for c in small} == {16}
    assert {c["BLOCK_SIZE_M"] for c in large} == {16, 32, 64, 128}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_without_cuda(capsys):
    assert tune_moe.main(["--batch-sizes", "1"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_cpu_smoke_fp8_writes_the_w8a8_table_the_fp8_moe_reads(tmp_path):
    """--dtype fp8: the block-FP8 MoE timed and checked against its float32 reference, its own table written
    after each batch size, every config with the weight block as BLOCK_SIZE_K."""
    assert tune_moe.main(["--cpu-smoke", "--dtype", "fp8", "--batch-sizes", "2", "--out-dir", str(tmp_path)]) == 0
    [table] = tmp_path.glob("*.json")
    assert table.name == "E=4,N=32,dtype=fp8_w8a8,device_name=cpu.json"
    doc = json.loads(table.read_text())
    assert doc["shape"]["weight_block_size"] == [16, 16] and set(doc["configs"]) == {"2"}
    assert all(c["BLOCK_SIZE_K"] == 16 for c in doc["configs"].values())
    chosen = moe_config_table.get_moe_config(2, 4, 32, torch.float8_e4m3fn, device_name="cpu", config_dir=tmp_path)
    assert chosen == doc["configs"]["2"]


def test_quick_space_is_a_small_subset_of_the_full_one():
    for m in (1, 64, 4096):
        full = tune_moe.candidate_configs(m, 128, 8)
        quick = tune_moe.candidate_configs(m, 128, 8, quick=True)
        assert quick and all(c in full for c in quick) and 4 * len(quick) <= len(full)
    fp8 = tune_moe.candidate_configs(256, 128, 8, quick=True, block_k=128)
    assert fp8 and {c["BLOCK_SIZE_K"] for c in fp8} == {128}
