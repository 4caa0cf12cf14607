"""Reading GGUF files: which files make one model, the config their metadata describes, the weights left in the
file's pages, the quantization's name, and clear errors for what this server does not run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import pytest
import torch

from qwen3_api.kernels.quant_linear import QuantExperts, QuantGroup, QuantTensor
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.errors import CheckpointError
from qwen3_api.model.gguf import GgufError, looks_like_gguf, prepare
from qwen3_api.model.gguf.files import gguf_files, open_gguf
from qwen3_api.model.loader import load_model, resolve_model_path
from tests.gguf.helpers import DENSE_BF16, MOE_Q4_K_M, MOE_Q8_0, Q4_K_M, target_logprobs, write_gguf
from tests.model.helpers import random_seqs


def test_the_converters_files_describe_the_checkpoints_they_came_from() -> None:
    """config.json of the tiny checkpoints the fixtures were converted from (fixtures/README.md)."""
    moe = ModelConfig.from_pretrained(prepare(MOE_Q8_0))
    assert (moe.architecture, moe.hidden_size, moe.num_hidden_layers, moe.num_attention_heads,
            moe.num_key_value_heads, moe.head_dim, moe.num_experts, moe.num_experts_per_tok,
            moe.moe_intermediate_size, moe.max_position_embeddings, moe.rope_theta, moe.tie_word_embeddings) == (
        "Qwen3MoeForCausalLM", 64, 2, 4, 2, 16, 4, 2, 32, 40960, 1e6, True)
    assert moe.rope_scaling is None and moe.norm_topk_prob
    dense = ModelConfig.from_pretrained(prepare(DENSE_BF16))
    assert (dense.architecture, dense.hidden_size, dense.intermediate_size, dense.num_key_value_heads,
            dense.max_position_embeddings, dense.rope_theta, dense.tie_word_embeddings) == (
        "Qwen3ForCausalLM", 32, 64, 1, 262144, 1e7, False)
    gen = json.loads((prepare(MOE_Q8_0) / "generation_config.json").read_text())
    tokens = open_gguf(MOE_Q8_0, tensors=False).get("tokenizer.ggml.tokens")
    assert sorted(tokens[i] for i in gen["eos_token_id"]) == ["<|endoftext|>", "<|im_end|>"]


def test_llama_quantize_q4_k_m_is_named_and_mixed_as_llama_cpp_made_it() -> None:
    """Qwen's Q4_K_M files mix Q4_K, Q6_K (attn_v, ffn_down, the tied embedding / output) and a 32-value type
    where a row is not whole 256-blocks; the catalog name is general.file_type's."""
    net, config = load_model(MOE_Q4_K_M)
    assert net.quantization == config.quantization == "Q4_K_M"
    layer = net.model.layers[0]
    q, k, v = layer.self_attn.qkv_proj.weight.parts
    assert (q.qtype.name, k.qtype.name, v.qtype.name) == ("Q4_K", "Q4_K", "Q6_K")
    assert layer.self_attn.o_proj.weight.qtype.name == "Q5_0"  # llama-quantize's fallback (64 columns)
    assert (layer.mlp.w13.gate.qtype.name, layer.mlp.w2.qtype.name) == ("Q4_K", "Q6_K")
    assert net.lm_head.weight is net.model.embed_tokens.weight and net.lm_head.weight.qtype.name == "Q6_K"


def test_yarn_keys_become_rope_scaling(gguf_dir: Path) -> None:
    path = write_gguf(gguf_dir / "yarn.gguf", types="Q8_0", layers=1, extra={
        "qwen3moe.rope.scaling.type": "yarn", "qwen3moe.rope.scaling.factor": 4.0,
        "qwen3moe.rope.scaling.original_context_length": 32768, "qwen3moe.rope.scaling.yarn_beta_fast": 32.0})
    config = ModelConfig.from_pretrained(prepare(path))
    assert config.rope_scaling is not None
    assert config.rope_scaling["rope_type"] == "yarn" and config.rope_scaling["factor"] == 4.0
    assert config.rope_scaling["original_max_position_embeddings"] == 32768
    assert config.rope_scaling["beta_fast"] == 32.0


def test_file_directory_and_split_set_are_the_same_model(gguf_dir: Path, q4_k_m: Path) -> None:
    one = load_model(q4_k_m)[0]
    folder = gguf_dir / "folder"
    folder.mkdir()
    shutil.copy(q4_k_m, folder / q4_k_m.name)
    (gguf_dir / "split").mkdir()
    # the same weights (write_gguf is deterministic per seed) in three shards of at most 10 tensors
    split_first = write_gguf(gguf_dir / "split" / "moe-Q4_K_M.gguf", types=Q4_K_M, default="Q4_K",
                             file_type=gguf.LlamaFileType.MOSTLY_Q4_K_M, split_max_tensors=10)
    assert split_first.name.endswith("-00001-of-00003.gguf")
    assert [f.name[-20:] for f in gguf_files(split_first)] == [
        "-00001-of-00003.gguf", "-00002-of-00003.gguf", "-00003-of-00003.gguf"]
    assert looks_like_gguf(folder) and looks_like_gguf(q4_k_m)
    seqs = random_seqs([10], one.config.vocab_size, seed=3)
    want = target_logprobs(one, seqs)[0]
    for source in (folder, split_first):
        net = load_model(source)[0]
        assert net.quantization == "Q4_K_M"
        assert torch.equal(target_logprobs(net, seqs)[0], want)
    (gguf_dir / "split" / split_first.name.replace("00001-of", "00002-of")).unlink()
    with pytest.raises(GgufError, match="shards missing"):
        prepare(split_first)
    shutil.copy(MOE_Q8_0, folder / MOE_Q8_0.name)
    with pytest.raises(GgufError, match="several GGUF models"):
        resolve_model_path(folder)


def _mapped_file(address: int) -> str | None:
    """The file whose mapping holds ``address`` in this process (/proc/self/maps), None for anonymous memory."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if lo <= address < hi:
            return fields[5] if len(fields) == 6 else None
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc/self/maps")
def test_weights_stay_quantized_in_the_files_pages(q4_k_m: Path) -> None:
    """No dequantized copy: every matrix is a QuantTensor whose bytes are the file's own mapped pages, and the
    model's float tensors (norms, router, rope table) are a sliver of it."""
    net, _ = load_model(q4_k_m)
    weights: list[QuantTensor] = [net.model.embed_tokens.weight, net.lm_head.weight]
    for layer in net.model.layers:
        assert isinstance(layer.mlp.w13, QuantExperts) and isinstance(layer.self_attn.qkv_proj.weight, QuantGroup)
        weights += [*layer.self_attn.qkv_proj.weight.parts, layer.self_attn.o_proj.weight, layer.mlp.w2,
                    layer.mlp.w13.gate, layer.mlp.w13.up]
    assert all(isinstance(w, QuantTensor) for w in weights)
    assert {w.qtype.name for w in weights} == {"Q4_K", "Q6_K"}
    for w in weights:
        assert _mapped_file(w.raw.data_ptr()) == str(q4_k_m.resolve())
    ckpt = open_gguf(q4_k_m)
    assert bytes(net.lm_head.weight.raw.numpy()) == bytes(ckpt.tensors["output.weight"].data.reshape(-1))
    floats = sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])
    assert floats < 0.05 * sum(w.nbytes for w in weights)


def _resident_bytes(path: Path) -> int:
    """Rss of this process's mappings of ``path`` (/proc/self/smaps): the pages faulted in."""
    total, current = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            current = fields[-1] == str(path.resolve())
        elif current and fields and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


def test_weights_are_faulted_in_at_load_when_they_fit(gguf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As llama.cpp reads its file at load: every page of the weights is mapped before the first token, unless
    the file would not fit beside the headroom (then pages come in as tokens touch them)."""
    from qwen3_api.model.gguf import files

    path = write_gguf(gguf_dir / "prefault-Q4_K_M.gguf", types=Q4_K_M, default="Q4_K",
                      file_type=gguf.LlamaFileType.MOSTLY_Q4_K_M, seed=21)
    net, _ = load_model(path)
    tensors = open_gguf(path).tensors
    weights = sum(t.data.nbytes for t in tensors.values())
    assert _resident_bytes(path) >= weights
    del net
    monkeypatch.setattr(files, "mem_available", lambda: weights)  # no room for the headroom
    path2 = write_gguf(gguf_dir / "lazy-Q4_K_M.gguf", types=Q4_K_M, default="Q4_K",
                       file_type=gguf.LlamaFileType.MOSTLY_Q4_K_M, seed=22)
    net2, _ = load_model(path2)
    assert _resident_bytes(path2) < weights / 2
    del net2


def test_unsupported_architecture_and_type_are_clear_errors(gguf_dir: Path) -> None:
    llama = gguf_dir / "llama.gguf"
    writer = gguf.GGUFWriter(llama, "llama")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match="unsupported GGUF architecture 'llama'.*qwen3, qwen3moe"):
        resolve_model_path(llama)
    iq = write_gguf(gguf_dir / "q4_1.gguf", types="Q8_0", layers=1)
    # rewrite one tensor's type id in place: Q8_0 -> Q4_1 (same block size; a type this server does not run)
    with open(iq, "r+b") as f:
        data = f.read()
        name = b"blk.0.attn_q.weight"
        at = data.index(name) + len(name)
        n_dims = int.from_bytes(data[at:at + 4], "little")
        type_at = at + 4 + 8 * n_dims
        assert int.from_bytes(data[type_at:type_at + 4], "little") == int(gguf.GGMLQuantizationType.Q8_0)
        f.seek(type_at)
        f.write(int(gguf.GGMLQuantizationType.Q4_1).to_bytes(4, "little"))
    directory = resolve_model_path(iq)  # the metadata is fine; the weights are not
    with pytest.raises(CheckpointError, match=r"blk\.0\.attn_q\.weight is Q4_1.*supported: .*Q4_K"):
        load_model(directory)
    with pytest.raises(CheckpointError, match="no such GGUF file"):
        resolve_model_path(gguf_dir / "absent.gguf")
    with pytest.raises(CheckpointError, match="--tokenizer is for GGUF files"):
        resolve_model_path(prepare(DENSE_BF16).parent.parent, tokenizer=gguf_dir)
