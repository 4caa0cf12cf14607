"""The loader: real checkpoint names and shapes, sharded files, dtype conversion, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwen3_api.demo.tiny import make_tiny_model
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.loader import CheckpointError, expected_tensors, load_model
from tests.model.helpers import TINY_MOE, hf_model

REPO = Path(__file__).resolve().parents[2]


def hf_checkpoint_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """What save_pretrained writes for a transformers Qwen3-MoE model, derived from its in-memory state dict:
    the fused experts (gate_up_proj [E, 2I, H], down_proj [E, H, I]) are split per expert; tied lm_head dropped."""
    out: dict[str, tuple[int, ...]] = {}
    tied = model.config.tie_word_embeddings
    for name, t in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        if name.endswith("mlp.experts.gate_up_proj"):
            base, (experts, two_i, hidden) = name.removesuffix("gate_up_proj"), t.shape
            for j in range(experts):
                out[f"{base}{j}.gate_proj.weight"] = (two_i // 2, hidden)
                out[f"{base}{j}.up_proj.weight"] = (two_i // 2, hidden)
        elif name.endswith("mlp.experts.down_proj"):
            base, (experts, hidden, inter) = name.removesuffix("down_proj"), t.shape
            for j in range(experts):
                out[f"{base}{j}.down_proj.weight"] = (hidden, inter)
        else:
            out[name] = tuple(t.shape)
    return out


def test_real_qwen3_30b_a3b_names_and_shapes(qwen3_tokenizer_dir: Path, tmp_path) -> None:
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    # first, the in-memory -> on-disk mapping is what save_pretrained really writes (small model, real save)
    small = hf_model(TINY_MOE | {"mlp_only_layers": [1]})
    small.save_pretrained(tmp_path)
    written = {k: tuple(v.shape) for k, v in load_file(tmp_path / "model.safetensors").items()}
    assert hf_checkpoint_shapes(small) == written
    assert expected_tensors(ModelConfig.from_pretrained(tmp_path)) == written
    # then the full-size model, on the meta device
    raw = json.loads((qwen3_tokenizer_dir / "config.json").read_text())
    with torch.device("meta"):
        reference = Qwen3MoeForCausalLM(Qwen3MoeConfig(**raw))
    theirs = hf_checkpoint_shapes(reference)
    ours = expected_tensors(ModelConfig.from_dict(raw))
    assert ours == theirs
    experts = [n for n in ours if ".mlp.experts." in n]
    assert len(experts) == 48 * 128 * 3
    assert len(ours) == 48 * (4 + 2 + 1 + 128 * 3 + 2) + 3
    assert ours["model.layers.47.mlp.experts.127.down_proj.weight"] == (2048, 768)
    assert ours["model.layers.0.self_attn.q_proj.weight"] == (32 * 128, 2048)
    assert ours["model.layers.0.self_attn.k_norm.weight"] == (128,)
    assert ours["model.layers.3.mlp.gate.weight"] == (128, 2048)
    assert ours["lm_head.weight"] == (151936, 2048)


def test_sharded_checkpoint_and_dtype_conversion(tmp_path) -> None:
    model = hf_model(TINY_MOE)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    model.save_pretrained(single)
    model.save_pretrained(sharded, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").exists()
    shards = sorted(sharded.glob("*.safetensors"))
    assert len(shards) > 2
    a, _ = load_model(single, dtype=torch.float32, progress=False)
    b, _ = load_model(sharded, dtype="bfloat16", progress=False)
    assert b.dtype == torch.bfloat16
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa.to(torch.bfloat16), pb), name
    w13 = a.model.layers[1].mlp.w13
    ckpt = load_file(single / "model.safetensors")
    gate = ckpt["model.layers.1.mlp.experts.5.gate_proj.weight"]
    up = ckpt["model.layers.1.mlp.experts.5.up_proj.weight"]
    assert torch.equal(w13[5], torch.cat([gate, up]))
    # CPU float32 stores projection weights transposed (its matvec is faster so), bfloat16 the checkpoint's way;
    # the embedding keeps rows for its lookups
    for net, transposed in ((a, True), (b, False)):
        layer = net.model.layers[1]
        weights = [layer.self_attn.qkv_proj.weight, layer.self_attn.o_proj.weight, layer.mlp.gate.weight,
                   layer.mlp.w13, layer.mlp.w2]
        if not net.config.tie_word_embeddings:
            weights.append(net.lm_head.weight)
        for w in weights:
            assert w.transpose(-1, -2).is_contiguous() == transposed and w.is_contiguous() != transposed
        assert net.model.embed_tokens.weight.is_contiguous()
    shards[1].unlink()
    with pytest.raises(CheckpointError, match=f"lists shards that are not in .*: {shards[1].name}"):
        load_model(sharded, progress=False)


@pytest.fixture()
def tiny(tmp_path) -> Path:
    return make_tiny_model(tmp_path / "tiny", layers=1, dtype="float32", seed=1)


def _rewrite(path: Path, edit) -> None:
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors")


def test_missing_tensor_is_named(tiny: Path) -> None:
    _rewrite(tiny, lambda t: t.pop("model.layers.0.mlp.experts.3.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensors: model\.layers\.0\.mlp\.experts\.3\.up_proj\.weight"):
        load_model(tiny, progress=False)


def test_unexpected_tensors_are_named_with_a_count(tiny: Path) -> None:
    def add(t):
        for i in range(7):
            t[f"model.layers.0.extra_{i}.weight"] = torch.zeros(2)

    _rewrite(tiny, add)
    with pytest.raises(CheckpointError, match=r"unexpected tensors: model\.layers\.0\.extra_0\.weight.*\(7 in all\)"):
        load_model(tiny, progress=False)


def test_wrong_shape_is_named(tiny: Path) -> None:
    _rewrite(tiny, lambda t: t.update({"model.norm.weight": torch.ones(65)}))
    with pytest.raises(CheckpointError, match=r"wrongly shaped tensors: model\.norm\.weight \[65\] \(expected \[64\]\)"):
        load_model(tiny, progress=False)


def test_unknown_architecture_is_named(tiny: Path) -> None:
    config = json.loads((tiny / "config.json").read_text())
    config["architectures"] = ["LlamaForCausalLM"]
    (tiny / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unsupported architecture 'LlamaForCausalLM'"):
        load_model(tiny, progress=False)


def test_missing_directory_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no such directory"):
        load_model(str(tmp_path / "nope"), progress=False)


def test_hub_id_while_offline_is_a_clear_error(tmp_path) -> None:
    script = (
        "from qwen3_api.model.loader import CheckpointError, load_model\n"
        "try:\n    load_model('Qwen/Qwen3-30B-A3B', progress=False)\n"
        "except CheckpointError as e:\n    print('ERR', e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ERR could not fetch 'Qwen/Qwen3-30B-A3B' from the Hugging Face hub")
    assert "HF_HUB_OFFLINE" in done.stdout


def test_mmap_reader_matches_safetensors_for_every_dtype(tmp_path) -> None:
    from qwen3_api.model.safetensors_mmap import SafetensorsFile

    gen = torch.Generator().manual_seed(0)
    tensors = {
        f"t.{dtype}".replace("torch.", ""): (torch.randn(3, 5, generator=gen) * 50).to(dtype)
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.int8, torch.bool)
    } | {"scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4)}
    save_file(tensors, tmp_path / "x.safetensors")
    with SafetensorsFile(tmp_path / "x.safetensors") as f:
        assert set(f.tensors) == set(tensors)
        assert [f.tensors[n].start for n in f.names_by_offset()] == sorted(i.start for i in f.tensors.values())
        for name in f.names_by_offset():
            expected = tensors[name]
            got = f.view(name).clone()
            f.release_through(name)
            assert got.dtype == expected.dtype and torch.equal(got, expected), name
        # released pages are read again from the file on the next touch
        assert torch.equal(f.view("t.float32"), tensors["t.float32"])


def test_corrupt_file_is_a_checkpoint_error(tiny: Path) -> None:
    (tiny / "model.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_model(tiny, progress=False)


def test_peak_memory_while_loading_stays_near_model_size(tmp_path) -> None:
    """Measured in a fresh process: the rise of its peak RSS while loading, vs the parameters' bytes
    (reading through safe_open instead keeps the whole mapped file resident: about 2x)."""
    path = make_tiny_model(tmp_path / "m", layers=2, hidden=256, experts=32, moe_intermediate=256,
                           intermediate=512, dtype="float32")  # fmt: skip
    script = (
        "import json, torch\n"
        "from qwen3_api.model.loader import load_model, model_bytes\n"
        "def hwm():\n"
        "    return [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "torch.zeros(1) + 1\n"
        f"before = hwm()\nm, _ = load_model({str(path)!r}, progress=False)\n"
        "print(json.dumps([hwm() - before, model_bytes(m)]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rise, size = json.loads(done.stdout.strip().splitlines()[-1])
    assert size > 20 * 2**20
    assert rise < 1.4 * size


def test_cli_reports_an_unreachable_hub_id_without_a_traceback(tmp_path) -> None:
    # Its own home: serve checks the (default) database before the model, and must not touch the user's.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path), PYTHONPATH=str(REPO),
               QWEN3_API_HOME=str(tmp_path / "home"))
    env.pop("QWEN3_API_DATABASE_URL", None)
    cmd = [sys.executable, "-m", "qwen3_api.cli", "serve", "--model", "Qwen/Qwen3-30B-A3B", "--no-auth"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "qwen3-api: error: could not fetch 'Qwen/Qwen3-30B-A3B'" in done.stderr
