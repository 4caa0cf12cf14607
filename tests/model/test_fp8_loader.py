"""Block-FP8 checkpoints on the CPU path: the config, the layout, and weights dequantized block by block at load,
checked against a float32 dequantization of the checkpoint's own tensors done here in one piece."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwen3_api.demo.tiny_fp8 import make_tiny_fp8_model
from qwen3_api.kernels import fp8_blocks
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.errors import ConfigError
from qwen3_api.model.fp8 import Fp8Config
from qwen3_api.model.loader import CheckpointError, expected_tensors, load_model


def dequantized(tensors: dict[str, torch.Tensor], name: str, block=(128, 128)) -> torch.Tensor:
    """float32 of checkpoint tensor `name`: FP8 times its scale blocks (expanded whole), else a plain upcast."""
    t = tensors[name]
    if t.dtype != torch.float8_e4m3fn:
        return t.float()
    scale = tensors[name.removesuffix(".weight") + ".weight_scale_inv"].float()
    expanded = scale.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[: t.shape[0], : t.shape[1]]
    return t.float() * expanded


@pytest.fixture(scope="module")
def fp8_dir(tmp_path_factory):
    return make_tiny_fp8_model(tmp_path_factory.mktemp("fp8"))


def test_tiny_fp8_checkpoint_is_in_the_official_format(fp8_dir):
    raw = json.loads((fp8_dir / "config.json").read_text())
    q = raw["quantization_config"]
    assert (q["quant_method"], q["fmt"], q["weight_block_size"]) == ("fp8", "e4m3", [128, 128])
    assert "model.layers.1.mlp.gate" in q["modules_to_not_convert"]
    tensors = load_file(str(fp8_dir / "model.safetensors"))
    assert tensors["model.layers.0.self_attn.q_proj.weight"].dtype == torch.float8_e4m3fn
    assert tensors["model.layers.0.self_attn.q_proj.weight_scale_inv"].shape == (2, 2)  # [256, 192] / 128
    assert tensors["model.layers.0.mlp.experts.3.down_proj.weight_scale_inv"].shape == (2, 1)  # [192, 64]
    assert tensors["model.layers.0.mlp.gate.weight"].dtype == torch.bfloat16  # the router stays bf16
    assert "model.layers.0.mlp.gate.weight_scale_inv" not in tensors
    # expected_tensors knows the FP8 layout: every checkpoint name with its shape, scales included
    expected = expected_tensors(ModelConfig.from_pretrained(fp8_dir))
    assert expected == {name: tuple(t.shape) for name, t in tensors.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_load_dequantizes_every_weight_exactly(fp8_dir, dtype):
    tensors = load_file(str(fp8_dir / "model.safetensors"))
    net, config = load_model(fp8_dir, dtype=dtype, progress=False)
    assert net.fp8 is not None and not net.fp8.keep_fp8  # torch kernels: no FP8 GEMMs
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    inter = config.moe_intermediate_size
    for i, layer in enumerate(net.model.layers):
        p = f"model.layers.{i}."
        qkv = torch.cat([dequantized(tensors, f"{p}self_attn.{n}_proj.weight") for n in "qkv"])
        assert qkv.shape[0] == q + 2 * kv
        torch.testing.assert_close(
            layer.self_attn.qkv_proj.weight.float(), qkv.to(dtype).float(), rtol=0, atol=0
        )
        o = dequantized(tensors, f"{p}self_attn.o_proj.weight")
        torch.testing.assert_close(layer.self_attn.o_proj.weight.float(), o.to(dtype).float(), rtol=0, atol=0)
        for j in range(config.num_experts):
            e = f"{p}mlp.experts.{j}."
            w13 = torch.cat(
                [dequantized(tensors, f"{e}gate_proj.weight"), dequantized(tensors, f"{e}up_proj.weight")]
            )
            assert w13.shape[0] == 2 * inter
            torch.testing.assert_close(layer.mlp.w13[j].float(), w13.to(dtype).float(), rtol=0, atol=0)
            w2 = dequantized(tensors, f"{e}down_proj.weight")
            torch.testing.assert_close(layer.mlp.w2[j].float(), w2.to(dtype).float(), rtol=0, atol=0)
        # the bf16 router is copied as it is
        torch.testing.assert_close(
            layer.mlp.gate.weight, tensors[f"{p}mlp.gate.weight"].to(dtype), rtol=0, atol=0
        )
    torch.testing.assert_close(net.lm_head.weight, tensors["lm_head.weight"].to(dtype), rtol=0, atol=0)


def test_dequantization_never_holds_more_than_a_row_of_blocks(fp8_dir, monkeypatch):
    """The peak-memory promise: no float32 copy of a whole weight, only block_n rows at a time."""
    seen: list[int] = []
    real = fp8_blocks.dequantize

    def spy(weight, scale, block):
        seen.append(weight.shape[0])
        return real(weight, scale, block)

    monkeypatch.setattr(fp8_blocks, "dequantize", spy)
    load_model(fp8_dir, dtype=torch.float32, progress=False)
    assert seen and max(seen) <= 128
    assert len(seen) > 2 * 4 * 3  # the 256-row q_proj and 192-row down_proj take two steps each


def test_dense_fp8_checkpoint_with_bf16_scales(tmp_path):
    """Qwen3 dense FP8 checkpoints (Qwen3-8B-FP8 style) store bf16 scales; the dense MLP merges gate and up."""
    path = make_tiny_fp8_model(tmp_path / "dense", dense=True, scale_dtype=torch.bfloat16, layers=1)
    tensors = load_file(str(path / "model.safetensors"))
    assert tensors["model.layers.0.mlp.gate_proj.weight_scale_inv"].dtype == torch.bfloat16
    net, _ = load_model(path, dtype=torch.float32, progress=False)
    mlp = net.model.layers[0].mlp
    gate_up = torch.cat([dequantized(tensors, "model.layers.0.mlp.gate_proj.weight"),
                         dequantized(tensors, "model.layers.0.mlp.up_proj.weight")])  # fmt: skip
    torch.testing.assert_close(mlp.gate_up_proj.weight, gate_up, rtol=0, atol=0)
    torch.testing.assert_close(mlp.down_proj.weight, dequantized(tensors, "model.layers.0.mlp.down_proj.weight"),
                               rtol=0, atol=0)  # fmt: skip


def _rewrite(path, *, config=None, drop=()):
    raw = json.loads((path / "config.json").read_text())
    if config:
        raw["quantization_config"] |= config
        (path / "config.json").write_text(json.dumps(raw))
    if drop:
        tensors = load_file(str(path / "model.safetensors"))
        save_file({k: v for k, v in tensors.items() if k not in drop}, str(path / "model.safetensors"))


@pytest.mark.parametrize(
    "change,message",
    [
        ({"quant_method": "gptq"}, "unsupported quantization 'gptq'"),
        ({"fmt": "e5m2"}, "only 'e4m3'"),
        ({"activation_scheme": "static"}, "only 'dynamic'"),
        ({"weight_block_size": None}, "per-tensor FP8 is not supported"),
    ],
)
def test_unsupported_quantization_configs_fail_before_any_weight(tmp_path, change, message):
    path = make_tiny_fp8_model(tmp_path / "m", layers=1)
    _rewrite(path, config=change)
    with pytest.raises(ConfigError, match=message):
        load_model(path, progress=False)


def test_a_missing_scale_is_named(tmp_path):
    path = make_tiny_fp8_model(tmp_path / "m", layers=1)
    _rewrite(path, drop=("model.layers.0.self_attn.k_proj.weight_scale_inv",))
    with pytest.raises(
        CheckpointError, match=r"missing tensors: model\.layers\.0\.self_attn\.k_proj\.weight_scale_inv"
    ):
        load_model(path, progress=False)


def test_modules_to_not_convert_decides_what_is_fp8(tmp_path):
    """A config that (wrongly) says the routers are converted expects their scales, and says which are absent."""
    path = make_tiny_fp8_model(tmp_path / "m", layers=1)
    _rewrite(path, config={"modules_to_not_convert": ["lm_head"]})
    with pytest.raises(CheckpointError, match=r"model\.layers\.0\.mlp\.gate\.weight_scale_inv"):
        load_model(path, progress=False)


def test_not_converted_names_match_whole_components():
    cfg = Fp8Config.from_dict({"quant_method": "fp8", "weight_block_size": [128, 128],
                               "modules_to_not_convert": ["model.layers.1.mlp.gate"]})  # fmt: skip
    assert not cfg.converts("model.layers.1.mlp.gate")
    assert cfg.converts("model.layers.1.mlp.gate_proj")  # a dense MLP's gate_proj is not the router
    assert cfg.converts("model.layers.11.mlp.gate")
    assert not cfg.converts("lm_head")  # always kept, as transformers does
    assert cfg.scale_shape(200, 300) == (2, 3)
