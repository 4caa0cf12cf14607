"""Our network == transformers' (same config, same weights via save_pretrained + our loader), flat batches."""

from __future__ import annotations

import math

import pytest
import torch

from qwen3_api.model.loader import load_model
from tests.model.helpers import (
    TINY_DENSE,
    TINY_MOE,
    hf_logits,
    hf_model,
    max_diff,
    our_prefill_logits,
    random_seqs,
)

LENS = [5, 17, 1, 9]  # different lengths in one flat batch, including a single-token prompt

VARIANTS = {
    "dense": TINY_DENSE,
    "moe": TINY_MOE,
    "moe_no_norm_topk": TINY_MOE | {"norm_topk_prob": False},
    "yarn": TINY_MOE
    | {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}},
    "yarn_old_type_key": TINY_DENSE
    | {
        "rope_scaling": {
            "type": "yarn",
            "factor": 2.0,
            "original_max_position_embeddings": 64,
            "beta_fast": 16,
            "mscale": 0.8,
            "mscale_all_dim": 0.5,
        }
    },
    "head_dim_not_hidden_over_heads": TINY_MOE | {"head_dim": 24, "num_attention_heads": 6},
    "tied_embeddings": TINY_DENSE | {"tie_word_embeddings": True},
    "mlp_only_and_sparse_step": TINY_MOE
    | {"num_hidden_layers": 4, "decoder_sparse_step": 2, "mlp_only_layers": [3]},
    "attention_bias_mha": TINY_DENSE | {"attention_bias": True, "num_key_value_heads": 4},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_float32_logits_match_transformers(variant: str, tmp_path) -> None:
    overrides = VARIANTS[variant]
    ref = hf_model(overrides)
    ref.save_pretrained(tmp_path)
    net, config = load_model(tmp_path, dtype=torch.float32, progress=False)
    # long enough that YaRN's scaled positions (> original_max_position_embeddings / factor) matter
    lens = LENS + ([150] if "yarn" in variant else [])
    seqs = random_seqs(lens, overrides["vocab_size"], seed=1)
    ours, theirs = our_prefill_logits(net, seqs), hf_logits(ref, seqs)
    assert all(o.dtype == torch.float32 for o in ours)
    assert theirs[1].std() > 0.3, "reference logits too flat for the comparison to mean anything"
    assert max_diff(ours, theirs) <= 1e-4


@pytest.mark.parametrize("variant", ["dense", "moe"])
def test_bfloat16_matches_transformers_bfloat16(variant: str, tmp_path) -> None:
    """bf16 keeps 8 significant bits: a logit near 4 is only known to 2**-6. Summation order differs from
    transformers (merged projections, expert outputs summed in float32), so results may differ by a few units
    in the last place of the largest logit; we allow 4 such units, and require that we are not further from
    the float32 truth than transformers' own bf16 run is (plus the same 4 units)."""
    overrides = VARIANTS[variant]
    ref = hf_model(overrides)
    ref.save_pretrained(tmp_path)
    seqs = random_seqs(LENS, overrides["vocab_size"], seed=1)
    truth = hf_logits(ref, seqs)
    theirs = hf_logits(ref.to(torch.bfloat16), seqs)
    net, _ = load_model(tmp_path, dtype=torch.bfloat16, progress=False)
    assert net.dtype == torch.bfloat16
    ours = our_prefill_logits(net, seqs)
    largest = max(t.abs().max().item() for t in truth)
    ulp = 2.0 ** (math.floor(math.log2(largest)) - 7)
    assert max_diff(ours, theirs) <= 4 * ulp
    assert max_diff(ours, truth) <= max_diff(theirs, truth) + 4 * ulp
    mean_diff = torch.cat([(o - t).abs().flatten() for o, t in zip(ours, theirs, strict=True)]).mean().item()
    assert mean_diff <= ulp
