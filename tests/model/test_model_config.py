"""ModelConfig: both key spellings, refusals that name the culprit, YaRN exactly as transformers computes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qwen3_api.model.config import ConfigError, ModelConfig
from qwen3_api.model.layers import rope_inv_freq
from tests.model.helpers import TINY_MOE

# The tests' tiny MoE with the real model's rope and context, the keys a config test reads.
BASE = TINY_MOE | {"head_dim": 32, "rope_theta": 1000000.0, "max_position_embeddings": 40960}


def test_real_config_fields(qwen3_tokenizer_dir: Path) -> None:
    c = ModelConfig.from_pretrained(qwen3_tokenizer_dir)
    assert c.architecture == "Qwen3MoeForCausalLM" and c.is_moe
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (2048, 48, 32, 4)
    assert (c.head_dim, c.num_experts, c.num_experts_per_tok, c.moe_intermediate_size) == (128, 128, 8, 768)
    assert c.torch_dtype == torch.bfloat16 and c.rope_scaling is None and c.rope_theta == 1e6
    assert c.eos_token_ids == [151645, 151643]  # from generation_config.json, not config.json's single id
    assert c.native_context_len == 32768
    assert all(c.layer_is_moe(i) for i in range(48))


def test_transformers5_spellings_equal_old_ones() -> None:
    old = BASE | {"rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
                  "torch_dtype": "float32"}  # fmt: skip
    new = {k: v for k, v in BASE.items() if k not in ("rope_theta", "num_experts")} | {
        "num_local_experts": 8,
        "dtype": "float32",
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
                            "original_max_position_embeddings": 32768},
    }  # fmt: skip
    assert ModelConfig.from_dict(old) == ModelConfig.from_dict(new)
    assert ModelConfig.from_dict(new).rope_scaling["factor"] == 4.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architectures": ["MixtralForCausalLM"]}, "unsupported architecture 'MixtralForCausalLM'"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "unsupported rope type 'linear'"),
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e6}}, "unsupported rope type 'llama3'"),
        ({"use_sliding_window": True}, "sliding-window"),
    ],
)
def test_refusals_name_what_is_unsupported(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(BASE | change)


def test_mlp_only_layers_and_sparse_step() -> None:
    c = ModelConfig.from_dict(BASE | {"num_hidden_layers": 6, "decoder_sparse_step": 2, "mlp_only_layers": [3]})
    assert [c.layer_is_moe(i) for i in range(6)] == [False, True, False, False, False, True]
    dense = ModelConfig.from_dict(BASE | {"architectures": ["Qwen3ForCausalLM"]})
    assert not dense.is_moe and not any(dense.layer_is_moe(i) for i in range(2))


def test_head_dim_defaults_to_hidden_over_heads() -> None:
    c = ModelConfig.from_dict({k: v for k, v in BASE.items() if k != "head_dim"})
    assert c.head_dim == 16


def _transformers_yarn(raw: dict) -> tuple[torch.Tensor, float]:
    from transformers import Qwen3MoeConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = Qwen3MoeConfig(**{k: v for k, v in raw.items() if k != "architectures"})
    return ROPE_INIT_FUNCTIONS["yarn"](config)


@pytest.mark.parametrize(
    "scaling",
    [
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
        {"type": "yarn", "factor": 2.5, "original_max_position_embeddings": 8192, "beta_fast": 16, "beta_slow": 2},
        {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 4096, "truncate": False},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096, "mscale": 1.0,
         "mscale_all_dim": 0.7},
        {"rope_type": "yarn", "factor": 3.0, "original_max_position_embeddings": 4096, "attention_factor": 1.3},
    ],
)  # fmt: skip
def test_yarn_frequencies_and_scaling_equal_transformers(scaling: dict) -> None:
    raw = BASE | {"rope_scaling": scaling}
    ours, our_scale = rope_inv_freq(ModelConfig.from_dict(raw))
    theirs, their_scale = _transformers_yarn(json.loads(json.dumps(raw)))
    assert torch.equal(ours, theirs)
    assert our_scale == pytest.approx(their_scale, rel=1e-12)
    assert not torch.equal(ours, rope_inv_freq(ModelConfig.from_dict(BASE))[0])


def test_with_max_model_len_turns_yarn_on_only_beyond_native() -> None:
    c = ModelConfig.from_dict(BASE)
    assert c.native_context_len == 32768
    assert c.with_max_model_len(32768) is c and c.with_max_model_len(1000) is c
    long = c.with_max_model_len(131072)
    assert long.rope_scaling == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert long.native_context_len == 32768 and long.max_position_embeddings == 131072
    theirs, scale = _transformers_yarn(BASE | {"rope_scaling": long.rope_scaling})
    assert torch.equal(rope_inv_freq(long)[0], theirs) and rope_inv_freq(long)[1] == pytest.approx(scale)
    # already YaRN: the factor is recomputed from the checkpoint's original length
    yarn = ModelConfig.from_dict(BASE | {"rope_scaling": {"type": "yarn", "factor": 2.0,
                                                          "original_max_position_embeddings": 16384}})  # fmt: skip
    assert yarn.native_context_len == 16384
    assert yarn.with_max_model_len(65536).rope_scaling["factor"] == 4.0
    small = ModelConfig.from_dict(BASE | {"max_position_embeddings": 4096})
    assert small.native_context_len == 4096
    assert small.with_max_model_len(8192).rope_scaling["factor"] == 2.0
