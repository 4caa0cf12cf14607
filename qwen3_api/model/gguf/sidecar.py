"""The checkpoint directory a GGUF file stands for: config, generation config, tokenizer and template, derived
from the file's metadata once and cached, so every layer above reads a GGUF model like a Hugging Face one.

``prepare(path)`` returns a directory (under $QWEN3_API_CACHE/gguf, default ~/.cache/qwen3-api/gguf) holding
config.json, generation_config.json, tokenizer.json, tokenizer_config.json (from the file, or copied from
``--tokenizer DIR``) and gguf.json, which names the GGUF file(s) the weights come from. The directory's name is a
digest of the files (path, size, modification time) and the tokenizer source, so a changed file gets a new one.
Writing goes through a temporary directory renamed into place: a concurrent or interrupted run never leaves a
half-written one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from qwen3_api.model.gguf.files import GgufError, gguf_files, open_gguf, tensor_index
from qwen3_api.model.gguf.metadata import file_type_name, generation_config, hf_config
from qwen3_api.model.gguf.tokenizer import tokenizer_config, tokenizer_json

POINTER = "gguf.json"
_FORMAT = 3  # bump when what the directory holds changes (2: the tensor index; 3: Qwen's plain added tokens)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def cache_root() -> Path:
    env = os.environ.get("QWEN3_API_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "qwen3-api") / "gguf"


def _fingerprint(files: list[Path], tokenizer_dir: Path | None) -> str:
    h = hashlib.sha256(f"format {_FORMAT}\n".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if tokenizer_dir is not None:
        for name in _TOKENIZER_FILES:
            f = tokenizer_dir / name
            h.update(f"{f.resolve()}\0{f.stat().st_mtime_ns if f.exists() else 0}\n".encode())
    return h.hexdigest()[:16]


def read_pointer(directory: str | Path) -> dict[str, Any] | None:
    """gguf.json of a prepared directory (files, file_type, tokenizer source), or None for any other dir."""
    f = Path(directory) / POINTER
    return json.loads(f.read_text()) if f.exists() else None


def prepare(path: str | Path, *, tokenizer_dir: str | Path | None = None) -> Path:
    """The derived checkpoint directory of the GGUF model at ``path`` (made on first use, then reused)."""
    files = gguf_files(path)
    tok_dir = Path(tokenizer_dir).expanduser() if tokenizer_dir else None
    if tok_dir is not None and not (tok_dir / "tokenizer.json").exists():
        raise GgufError(f"--tokenizer {tok_dir}: no tokenizer.json there")
    root = cache_root()
    final = root / f"{files[0].name.removesuffix('.gguf')}-{_fingerprint(files, tok_dir)}"
    if (final / POINTER).exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gguf-", dir=root))
    try:
        _write(tmp, files, tok_dir)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / POINTER).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write(out: Path, files: list[Path], tok_dir: Path | None) -> None:
    ckpt = open_gguf(files[0], tensors=True)  # tensors: tie_word_embeddings and the type census
    config = hf_config(ckpt)
    gen = generation_config(ckpt)
    if tok_dir is not None:
        shutil.copy(tok_dir / "tokenizer.json", out / "tokenizer.json")
    else:
        doc = tokenizer_json(ckpt)
        try:
            Tokenizer.from_str(doc)
        except Exception as exc:  # the tokenizers library's own parse errors
            raise GgufError(f"{files[0].name}: its tokenizer does not load ({exc}); pass --tokenizer DIR") from None
        (out / "tokenizer.json").write_text(doc, encoding="utf-8")
    if tok_dir is not None and (tok_dir / "tokenizer_config.json").exists():
        shutil.copy(tok_dir / "tokenizer_config.json", out / "tokenizer_config.json")
    else:  # the file's chat template and special tokens
        (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(ckpt), ensure_ascii=False, indent=1),
                                                   encoding="utf-8")
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "generation_config.json").write_text(json.dumps(gen, indent=1))
    pointer = {"files": [str(f.resolve()) for f in files], "file_type": file_type_name(ckpt),
               "tokenizer": str(tok_dir.resolve()) if tok_dir else "gguf", "name": ckpt.get("general.name"),
               # where each tensor is, so a load maps the files without parsing them again (files.open_indexed)
               "tensors": tensor_index(ckpt)}
    (out / POINTER).write_text(json.dumps(pointer, indent=1))
