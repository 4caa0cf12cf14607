"""GGUF files for the tests, and the references our results are checked against.

``write_gguf`` writes a Qwen3 / Qwen3-MoE file with the ``gguf`` package's own writer: the metadata (tokenizer,
template, special ids) copied from a fixture made by llama.cpp's converter, the hyper-parameters under the keys
the converter writes, and random but valid blocks of any tensor type (the converter only writes F32 / F16 / BF16 /
Q8_0). ``act_quant_reference`` is the float32 model ``gguf.quants.dequantize`` gives, with the activations rounded
per block as our kernels round them: the same function our kernels compute, in plain torch.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
import torch.nn.functional as F

from qwen3_api.kernels import torch_kernels
from qwen3_api.kernels.quant_linear import QuantTensor
from qwen3_api.kernels.quant_native import ops
from qwen3_api.kernels.quant_types import SUPPORTED_TYPES, random_blocks
from qwen3_api.kernels.torch_linear import CpuLinear
from qwen3_api.model.gguf.files import field_value, open_gguf
from qwen3_api.model.gguf.reference import reference_model
from qwen3_api.model.gguf.sidecar import read_pointer
from qwen3_api.model.qwen3 import Qwen3ForCausalLM
from tests.model.helpers import our_prefill_logits

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MOE_Q8_0 = FIXTURES / "tiny-qwen3moe-Q8_0.gguf"  # llama.cpp's convert_hf_to_gguf.py (fixtures/README.md)
DENSE_BF16 = FIXTURES / "tiny-qwen3-BF16.gguf"
MOE_Q4_K_M = FIXTURES / "tiny-qwen3moe-Q4_K_M.gguf"  # llama-quantize's Q4_K_M of the converter's F16
# The weight kinds write_gguf asks a type for (as llama-quantize's rules name them).
KINDS = ("token_embd", "output", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
# Q4_K_M as llama-quantize mixes it: Q6_K for the output and attn_v / ffn_down (half the layers there), else Q4_K.
Q4_K_M = {"output": "Q6_K", "attn_v": "Q6_K", "ffn_down": "Q6_K"}
_HPARAM_KEYS = ("block_count", "context_length", "embedding_length", "feed_forward_length", "attention.head_count",
                "attention.head_count_kv", "attention.key_length", "attention.value_length", "expert_count",
                "expert_used_count", "expert_feed_forward_length", "rope.freq_base",
                "attention.layer_norm_rms_epsilon")


def _copy_metadata(writer: gguf.GGUFWriter, source: Path, arch: str, skip: set[str]) -> None:
    """Every key of ``source`` except the writer's own, the architecture's hyper-parameters and ``skip``."""
    reader = gguf.GGUFReader(source)
    src_arch = open_gguf(source, tensors=False).get("general.architecture")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in skip:
            continue
        if name.startswith(f"{src_arch}."):
            continue  # the source's hyper-parameters: this file writes its own
        value = field_value(field)
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, vtype, sub)
    del arch


def _values(kind: str, name: str, shape: tuple[int, ...], gen: torch.Generator) -> np.ndarray:
    """Random weights of ``name``'s type as the array the writer takes (raw bytes for quantized types)."""
    qtype = SUPPORTED_TYPES[kind]
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    std = 1.0 if name == "token_embd.weight" else 1 / math.sqrt(cols)
    raw = random_blocks(qtype, rows, cols, gen, std=std).numpy()
    if kind == "F32":
        return raw.view(np.float32).reshape(shape)
    if kind == "F16":
        return raw.view(np.float16).reshape(shape)
    return raw.reshape(*shape[:-1], qtype.row_bytes(cols))


def write_gguf(  # noqa: PLR0913 - a model's shape is many numbers
    path: Path,
    *,
    arch: str = "qwen3moe",
    types: str | dict[str, str] = "Q8_0",
    default: str | None = None,
    layers: int = 2,
    hidden: int = 256,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int = 64,
    experts: int = 4,
    top_k: int = 2,
    inter: int = 256,
    tied: bool = False,
    metadata_from: Path = MOE_Q8_0,
    file_type: int | None = None,
    extra: dict[str, Any] | None = None,
    split_max_tensors: int = 0,
    seed: int = 0,
) -> Path:
    """A Qwen3(-MoE) GGUF at ``path`` with random weights: ``types`` is one type for every matrix, or a type per
    weight kind (KINDS, the rest ``default``); norms and the router are F32 as the converter writes them.
    ``extra`` sets metadata keys (str / int / float / bool values). Returns the path of the (first) file."""
    per_kind = {k: types for k in KINDS} if isinstance(types, str) else {k: types.get(k, default) for k in KINDS}
    vocab = len(open_gguf(metadata_from, tensors=False).get("tokenizer.ggml.tokens"))
    writer = gguf.GGUFWriter(path, arch, split_max_tensors=split_max_tensors)
    _copy_metadata(writer, metadata_from, arch, skip={"general.file_type", *(extra or {})})
    hp = dict(zip(_HPARAM_KEYS, (layers, 4096, hidden, inter, heads, kv_heads, head_dim, head_dim, experts, top_k,
                                 inter, 1e6, 1e-6), strict=True))
    if arch == "qwen3":
        hp = {k: v for k, v in hp.items() if not k.startswith("expert")}
    for key, value in hp.items():
        full = f"{arch}.{key}"
        if isinstance(value, float):
            writer.add_float32(full, value)
        else:
            writer.add_uint32(full, value)
    for key, value in (extra or {}).items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_string(key, str(value))
    if file_type is not None:
        writer.add_file_type(file_type)
    gen = torch.Generator().manual_seed(seed)
    q, kv = heads * head_dim, kv_heads * head_dim

    def matrix(name: str, kind: str, *shape: int) -> None:
        t = per_kind[kind]
        writer.add_tensor(name, _values(t, name, shape, gen), raw_dtype=gguf.GGMLQuantizationType[t])

    def vector(name: str, *shape: int, around: float = 1.0, spread: float = 0.1) -> None:
        writer.add_tensor(name, (around + spread * torch.randn(shape, generator=gen)).numpy().astype(np.float32))

    matrix("token_embd.weight", "token_embd", vocab, hidden)
    vector("output_norm.weight", hidden)
    if not tied:
        matrix("output.weight", "output", vocab, hidden)
    for i in range(layers):
        b = f"blk.{i}."
        vector(b + "attn_norm.weight", hidden)
        vector(b + "ffn_norm.weight", hidden)
        matrix(b + "attn_q.weight", "attn_q", q, hidden)
        matrix(b + "attn_k.weight", "attn_k", kv, hidden)
        matrix(b + "attn_v.weight", "attn_v", kv, hidden)
        matrix(b + "attn_output.weight", "attn_output", hidden, q)
        vector(b + "attn_q_norm.weight", head_dim)
        vector(b + "attn_k_norm.weight", head_dim)
        if arch == "qwen3moe":
            vector(b + "ffn_gate_inp.weight", experts, hidden, around=0.0, spread=hidden**-0.5)
            matrix(b + "ffn_gate_exps.weight", "ffn_gate", experts, inter, hidden)
            matrix(b + "ffn_up_exps.weight", "ffn_up", experts, inter, hidden)
            matrix(b + "ffn_down_exps.weight", "ffn_down", experts, hidden, inter)
        else:
            matrix(b + "ffn_gate.weight", "ffn_gate", inter, hidden)
            matrix(b + "ffn_up.weight", "ffn_up", inter, hidden)
            matrix(b + "ffn_down.weight", "ffn_down", hidden, inter)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors:
        return writer.format_shard_names(path)[0]
    return path


# --- single tensors and experts against the gguf package's dequantization (test_kernel_types, test_bf16_gemm) ---

K_QUANTS = {"Q4_K", "Q5_K", "Q6_K"}
FLOATS = {"F32", "F16", "BF16"}


def gguf_dequant(raw: torch.Tensor, name: str, rows: int, cols: int) -> torch.Tensor:
    """The float32 weights [rows, cols] as the gguf package decodes the blocks."""
    qtype = SUPPORTED_TYPES[name]
    blocks = raw.numpy().reshape(rows, qtype.row_bytes(cols))
    if name == "F32":
        blocks = blocks.view(np.float32)
    elif name == "F16":
        blocks = blocks.view(np.float16)
    values = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[name])
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(rows, cols)


def weight(name: str, rows: int, cols: int, seed: int) -> tuple[QuantTensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    raw = random_blocks(SUPPORTED_TYPES[name], rows, cols, gen, std=cols**-0.5)
    return QuantTensor(raw, SUPPORTED_TYPES[name], (rows, cols)), gguf_dequant(raw, name, rows, cols)


def cols_for(name: str) -> int:
    return 512 if name in K_QUANTS else 96  # whole blocks: 256 values (K-quants), 32 (the others)



def expert_stack(name: str, experts: int, rows: int, cols: int, gen: torch.Generator) -> tuple[Any, torch.Tensor]:
    """A random expert stack [experts, rows, cols] of type ``name`` (QuantTensor) and its gguf-dequantized values."""
    raw = random_blocks(SUPPORTED_TYPES[name], experts * rows, cols, gen, std=cols**-0.5)
    ref = gguf_dequant(raw, name, experts * rows, cols).reshape(experts, rows, cols)
    return QuantTensor(raw, SUPPORTED_TYPES[name], (experts, rows, cols)), ref


def moe_reference(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, gate: torch.Tensor, up: torch.Tensor,
                  down: torch.Tensor, act_gate: torch.Tensor | None = None, roundtrip=None) -> torch.Tensor:  # noqa: ANN001
    """SwiGLU experts in float32, token by token; ``roundtrip`` quantizes the down projection's input as the
    kernel does (None: float activations throughout)."""
    xa = x if act_gate is None else act_gate
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for slot in range(ids.shape[1]):
            e = int(ids[t, slot])
            h = torch.nn.functional.silu(gate[e] @ xa[t]) * (up[e] @ xa[t])
            if roundtrip is not None:
                h = roundtrip(h[None])[0]
            out[t] += weights[t, slot] * (down[e] @ h)
    return out


# --- the reference with the kernels' activation rounding --------------------------------------------------------


def _weight_types(path: Path, model: Qwen3ForCausalLM) -> dict[int, tuple[tuple[int, int], ...]]:
    """id(float weight of ``model``) -> (ggml type id, rows) of each part of its rows (q / k / v of the fused
    qkv, gate / up), as our kernels run them: each part with its own activation rounding."""
    pointer = read_pointer(path)  # a prepared directory names its file
    tensors = open_gguf(pointer["files"][0] if pointer else path).tensors

    def parts(*names: str) -> tuple[tuple[int, int], ...]:
        return tuple((tensors[n].type_id, tensors[n].shape[-2]) for n in names)

    head = "output.weight" if "output.weight" in tensors else "token_embd.weight"
    out = {id(model.lm_head.weight): parts(head)}
    for i, layer in enumerate(model.model.layers):
        b = f"blk.{i}."
        out[id(layer.self_attn.qkv_proj.weight)] = parts(b + "attn_q.weight", b + "attn_k.weight",
                                                         b + "attn_v.weight")
        out[id(layer.self_attn.o_proj.weight)] = parts(b + "attn_output.weight")
        if hasattr(layer.mlp, "w13"):
            out[id(layer.mlp.w13)] = parts(b + "ffn_gate_exps.weight", b + "ffn_up_exps.weight")
            out[id(layer.mlp.w2)] = parts(b + "ffn_down_exps.weight")
        else:
            out[id(layer.mlp.gate_up_proj.weight)] = parts(b + "ffn_gate.weight", b + "ffn_up.weight")
            out[id(layer.mlp.down_proj.weight)] = parts(b + "ffn_down.weight")
    return out


FLOAT_TYPE_IDS = {0, 1, 30}  # F32, F16, BF16: float activations, never rounded


def _rounded(x: torch.Tensor, type_id: int, bf16: bool = False) -> torch.Tensor:
    """x as the kernels see it for a weight of this type: int8 blocks (act_roundtrip), or with ``bf16`` the bf16
    GEMM's rounding of each value (float types: x itself either way)."""
    if type_id in FLOAT_TYPE_IDS:
        return x
    if bf16:
        return x.bfloat16().float()
    return ops().act_roundtrip(x.float().reshape(-1, x.shape[-1]).contiguous(), type_id).reshape(x.shape)


def _weight(w: torch.Tensor, type_id: int, bf16: bool) -> torch.Tensor:
    """A quantized weight's float values as the bf16 GEMM multiplies them (rounded to bf16), else as they are."""
    return w.bfloat16().float() if bf16 and type_id not in FLOAT_TYPE_IDS else w


class _RoundingLinear(CpuLinear):
    """The torch linear with each weight part's activations rounded as our kernel rounds them."""

    def __init__(self, types: dict[int, tuple[tuple[int, int], ...]], bf16: bool) -> None:
        super().__init__()
        self.types = types
        self.bf16 = bf16

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        parts = self.types.get(id(weight))
        if parts is None:
            return F.linear(x, weight, bias)
        outs, row = [], 0
        for type_id, rows in parts:
            w = _weight(weight[row:row + rows], type_id, self.bf16)
            outs.append(F.linear(_rounded(x, type_id, self.bf16), w))
            row += rows
        out = torch.cat(outs, dim=-1)
        return out if bias is None else out + bias


def act_quant_reference(path: Path, bf16: bool = False) -> Qwen3ForCausalLM:
    """reference_model(path) (weights by gguf.quants.dequantize, float32) whose matmuls see the activations
    rounded per block as our int8 kernels round them, or (``bf16``) activations and quantized weights rounded
    to bf16 as the bf16 GEMM path does: ours must match it to float rounding."""
    model, _ = reference_model(path)
    types = _weight_types(path, model)
    base = torch_kernels()

    def moe(hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
            topk_ids: torch.Tensor) -> torch.Tensor:
        (gate_up, _), _up = types[id(w13)]
        [(down, _)] = types[id(w2)]
        assert _up[0] == gate_up, "gate and up of one type (one activation rounding)"
        x = _rounded(hidden, gate_up, bf16)
        w13, w2 = _weight(w13, gate_up, bf16), _weight(w2, down, bf16)
        out = torch.zeros_like(hidden)
        inter = w13.shape[1] // 2
        for t in range(hidden.shape[0]):
            for slot in range(topk_ids.shape[1]):
                e = int(topk_ids[t, slot])
                h = F.silu(w13[e, :inter] @ x[t]) * (w13[e, inter:] @ x[t])
                out[t] += topk_weights[t, slot] * (w2[e] @ _rounded(h[None], down, bf16)[0])
        return out

    model.kernels = type(base)(name="gguf-reference", linear=_RoundingLinear(types, bf16), fused_moe=moe,
                               paged_attention=base.paged_attention, store_kvcache=base.store_kvcache,
                               rms_norm=base.rms_norm, rotary=base.rotary)
    return model


def target_logprobs(net: torch.nn.Module, seqs: list[list[int]]) -> list[torch.Tensor]:
    """Teacher-forced log-probabilities of each next token (float32), every sequence in one batch."""
    logits = our_prefill_logits(net, seqs)
    return [torch.log_softmax(lg[:-1].float(), -1).gather(-1, torch.tensor(s[1:])[:, None])[:, 0]
            for lg, s in zip(logits, seqs, strict=True)]


def logprob_errors(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> tuple[float, float]:
    """(mean, max) absolute difference of two runs' target log-probabilities."""
    diff = torch.cat([(a - b).abs() for a, b in zip(ours, ref, strict=True)])
    return diff.mean().item(), diff.max().item()



# --- the real Qwen3 tokenizer as llama.cpp's converter writes it ---------------------------------------------------

CONVERTER_VOCAB = FIXTURES / "qwen3_vocab_converter.json"  # digests of the converter's own output (--vocab-only)


@functools.cache
def converter_vocab(tokenizer_dir: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """The token list and types convert_hf_to_gguf.py writes for a byte-level BPE tokenizer (its get_vocab_base,
    line for line: [PADi] for ids the tokenizer lacks, added tokens CONTROL when special or ``<|...|>``-looking,
    else USER_DEFINED). Pinned to the converter's real output by CONVERTER_VOCAB's digests."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    reverse = {i: t for t, i in tokenizer.vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            if not decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            if decoder[i].special or (token.startswith("<|") and token.endswith("|>")):
                types.append(gguf.TokenType.CONTROL)
            else:
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def write_vocab_gguf(path: Path, tokenizer_dir: Path, *, chat_template: str | None = None) -> Path:
    """A metadata-only qwen3moe GGUF carrying the real tokenizer as the converter writes it (tokens and types as
    above; merges, special ids and the chat template by the gguf package's own SpecialVocab)."""
    import json

    config = json.loads((tokenizer_dir / "config.json").read_text())
    writer = gguf.GGUFWriter(path, "qwen3moe")
    arch = "qwen3moe"
    for key, value in (("block_count", 1), ("context_length", config["max_position_embeddings"]),
                       ("embedding_length", 256), ("attention.head_count", 4), ("attention.head_count_kv", 2),
                       ("attention.key_length", 64), ("expert_count", 4), ("expert_used_count", 2),
                       ("expert_feed_forward_length", 256)):
        writer.add_uint32(f"{arch}.{key}", value)
    tokens, types = converter_vocab(tokenizer_dir, config["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(tokenizer_dir, load_merges=True).add_to_gguf(writer)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def field_digest(value: Any) -> str:
    """sha256 of a metadata value as JSON (how CONVERTER_VOCAB records the converter's fields)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(value, ensure_ascii=False).encode()).hexdigest()
