"""GGUF files for the suite, written once per session into a temporary directory (the converter's fixtures are
in fixtures/), and the derived checkpoint directories kept there too (QWEN3_API_CACHE), never in ~/.cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import pytest

from qwen3_api.chat.template import ChatTemplate
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.model.gguf import prepare
from tests.gguf.helpers import Q4_K_M, write_gguf, write_vocab_gguf


@pytest.fixture(scope="session", autouse=True)
def gguf_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """prepare()'s derived directories in a session temp dir."""
    path = tmp_path_factory.mktemp("gguf-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QWEN3_API_CACHE", str(path))
        mp.setenv("QWEN3_API_HOME", str(path / "home"))
        yield path


@pytest.fixture(scope="session")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf-files")


@pytest.fixture(scope="session")
def q4_k_m(gguf_dir: Path) -> Path:
    """qwen3moe in llama-quantize's Q4_K_M mix (Q4_K, Q6_K for output / attn_v / ffn_down)."""
    return write_gguf(gguf_dir / "moe-Q4_K_M.gguf", types=Q4_K_M, default="Q4_K",
                      file_type=gguf.LlamaFileType.MOSTLY_Q4_K_M)


@pytest.fixture(scope="session")
def q5_k_m(gguf_dir: Path) -> Path:
    return write_gguf(gguf_dir / "moe-Q5_K_M.gguf", types={"attn_v": "Q6_K", "output": "Q6_K"}, default="Q5_K",
                      file_type=gguf.LlamaFileType.MOSTLY_Q5_K_M, seed=1)


@pytest.fixture(scope="session")
def q4_0_dense(gguf_dir: Path) -> Path:
    """Dense qwen3 with the 32-value types (Q4_0, Q5_0, Q8_0) and F16 / BF16 / F32 matrices."""
    return write_gguf(gguf_dir / "dense-Q4_0.gguf", arch="qwen3", default="Q4_0",
                      types={"ffn_down": "Q5_0", "output": "Q8_0", "token_embd": "F16", "attn_output": "BF16",
                             "attn_v": "F32"},
                      file_type=gguf.LlamaFileType.MOSTLY_Q4_0, seed=2)


@pytest.fixture(scope="session")
def real_vocab(gguf_dir: Path, qwen3_tokenizer_dir: Path) -> Path:
    """A metadata-only GGUF with the real Qwen3 tokenizer and template as llama.cpp's converter writes them."""
    return write_vocab_gguf(gguf_dir / "qwen3-vocab.gguf", qwen3_tokenizer_dir)


@pytest.fixture(scope="session")
def vocab_templates(real_vocab: Path, qwen3_tokenizer_dir: Path) -> tuple[ChatTemplate, ChatTemplate]:
    """(the GGUF file's chat template and tokenizer, the real Qwen3 ones), each built once."""
    return (ChatTemplate(ChatTokenizer.from_dir(prepare(real_vocab))),
            ChatTemplate(ChatTokenizer.from_dir(qwen3_tokenizer_dir)))
