"""Finding and opening GGUF files: one file, a directory holding one, or a split set (-00001-of-0000N.gguf).

The files are read with the ``gguf`` package (llama.cpp's own reader), memory-mapped copy-on-write: tensors are
numpy views into the mapping and become torch tensors without a copy. A split set is opened shard by shard and
merged: the metadata comes from the first shard (the others repeat only the split keys), the tensors from all.
"""

from __future__ import annotations

import logging
import mmap
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qwen3_api.model.errors import CheckpointError

_SPLIT = re.compile(r"^(?P<stem>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
GGUF_MAGIC = b"GGUF"

logger = logging.getLogger(__name__)


class GgufError(CheckpointError):
    """A GGUF file this server cannot serve: unreadable, an unsupported architecture or tensor type, a split set
    with missing shards. The message names the file and what is wrong."""


def looks_like_gguf(path: str | Path) -> bool:
    """Whether ``path`` is a .gguf file, or a directory holding .gguf files (and no safetensors)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p.suffix == ".gguf" or _has_magic(p)
    if p.is_dir():
        return any(p.glob("*.gguf")) and not any(p.glob("*.safetensors"))
    return str(path).endswith(".gguf")


def _has_magic(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def gguf_files(path: str | Path) -> list[Path]:
    """The file(s) of one model, in shard order: ``path`` itself, every shard of its split set, or the one model
    in a directory (a directory holding two different models is refused: name the file)."""
    p = Path(path).expanduser()
    if p.is_dir():
        found = sorted(p.glob("*.gguf"))
        if not found:
            raise GgufError(f"no .gguf file in {p}")
        stems = {(_SPLIT.match(f.name).group("stem") if _SPLIT.match(f.name) else f.stem) for f in found}
        if len(stems) > 1:
            raise GgufError(f"{p} holds several GGUF models ({', '.join(sorted(stems))}): pass the file to serve")
        p = found[0]
    if not p.exists():
        raise GgufError(f"no such GGUF file: {p}")
    m = _SPLIT.match(p.name)
    if m is None:
        return [p]
    count = int(m.group("count"))
    shards = [p.with_name(f"{m.group('stem')}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    absent = [s.name for s in shards if not s.exists()]
    if absent:
        raise GgufError(f"split GGUF {p.name}: shards missing from {p.parent}: {', '.join(absent)}")
    return shards


@dataclass(slots=True)
class GgufTensor:
    """One tensor: ggml type id, ggml shape ``ne`` (fastest-varying first), and its bytes in the mapping."""

    name: str
    type_id: int
    ne: tuple[int, ...]
    data: np.ndarray  # uint8 (quantized) or the float dtype, a view into the memory-mapped file
    file: int = 0  # which file of a split set holds it
    offset: int = 0  # where its bytes start in that file

    @property
    def shape(self) -> tuple[int, ...]:
        """The torch-order shape (``ne`` reversed): [rows, cols] for a matrix, [experts, rows, cols] for a stack."""
        return tuple(reversed(self.ne))


@dataclass(slots=True)
class GgufCheckpoint:
    """The metadata (plain Python values) and tensors of a GGUF model, over one or several files."""

    files: list[Path]
    metadata: dict[str, Any]
    tensors: dict[str, GgufTensor]
    _readers: list[Any] = field(default_factory=list, repr=False)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def nbytes(self) -> int:
        """Bytes of all tensors."""
        return sum(t.data.nbytes for t in self.tensors.values())

    def advise(self, *advice: int) -> None:
        """madvise every mapping (e.g. MADV_WILLNEED to read ahead): a no-op where unsupported."""
        for reader in self._readers:
            # an np.memmap (open_indexed) or a GGUFReader (its .data is the np.memmap)
            mm = getattr(reader, "_mmap", None) or getattr(getattr(reader, "data", None), "_mmap", None)
            for a in advice:
                try:
                    mm.madvise(a)
                except (AttributeError, OSError, ValueError):
                    pass


def field_value(field: Any) -> Any:
    """A reader field as a Python value: str, int, float, bool, or a list of those."""
    import gguf

    types = list(field.types)
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.ARRAY:
        inner = types[-1]
        if inner == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    value = field.parts[field.data[0]].tolist()[0]
    return bool(value) if types[0] == gguf.GGUFValueType.BOOL else value


def _reader_class() -> type:
    """gguf.GGUFReader, parsing the metadata over a plain ndarray view of its mapping.

    The reader slices its np.memmap once per value, and np.memmap's per-slice bookkeeping (__array_finalize__)
    is most of the time it takes over a real Qwen3 vocabulary (151,936 tokens and 151,387 merges): ~50 s on this
    machine, ~7 s over the plain view. The parsing is still the package's own; the tensors still come from the
    mapping itself (the view is swapped back before the reader builds them).
    """
    import gguf

    class Reader(gguf.GGUFReader):
        def _build_fields(self, offs: int, count: int) -> int:
            mapped = self.data
            self.data = np.asarray(mapped).view(np.ndarray)
            try:
                return super()._build_fields(offs, count)
            finally:
                self.data = mapped

    return Reader if hasattr(gguf.GGUFReader, "_build_fields") else gguf.GGUFReader


def _open_reader(path: Path) -> Any:
    try:
        # copy-on-write ("c"): the arrays are writable, so torch takes them without a copy or a warning; the
        # pages stay the file's (shared with the page cache) because nothing writes to them
        return _reader_class()(path, "c")
    except (ValueError, OSError, IndexError, KeyError) as exc:
        raise GgufError(f"cannot read {path.name} as GGUF: {type(exc).__name__}: {exc}") from None


def open_gguf(path: str | Path, *, tensors: bool = True) -> GgufCheckpoint:
    """Open a model's GGUF file(s): metadata always, the tensor views when ``tensors``."""
    files = gguf_files(path)
    readers = [_open_reader(f) for f in files]
    metadata = {name: field_value(f) for name, f in readers[0].fields.items()
                if not name.startswith("GGUF.")}  # the reader's own header fields
    count = metadata.get("split.count")
    if count is not None and int(count) != len(files):
        raise GgufError(f"{files[0].name} says it is split in {count} files, found {len(files)}")
    out: dict[str, GgufTensor] = {}
    if tensors:
        for i, reader in enumerate(readers):
            for t in reader.tensors:
                out[t.name] = GgufTensor(t.name, int(t.tensor_type), tuple(int(n) for n in t.shape), t.data, i,
                                         int(t.data_offset))
    return GgufCheckpoint(files, metadata, out, readers)


def tensor_index(ckpt: GgufCheckpoint) -> dict[str, list[Any]]:
    """Where each tensor is: name -> [file, offset, type id, ne, bytes] (what open_indexed maps again)."""
    return {t.name: [t.file, t.offset, t.type_id, list(t.ne), int(t.data.nbytes)] for t in ckpt.tensors.values()}


# numpy dtype of the values of the float types (the others are raw uint8 blocks)
_FLOAT_DTYPES = {0: np.float32, 1: np.float16}


def open_indexed(files: list[str | Path], index: dict[str, list[Any]]) -> GgufCheckpoint:
    """The tensors of a model whose index ``tensor_index`` recorded, mapped without parsing the files again.

    The gguf package parses the header (metadata and tensor infos) of a real Qwen3 file in tens of seconds, most
    of it the 151,936-token vocabulary; prepare() does that once and keeps the index, so each later load only maps
    the files (copy-on-write: writable arrays for torch, the pages still the page cache's).
    """
    paths = [Path(f) for f in files]
    maps = []
    for f in paths:
        try:
            maps.append(np.memmap(f, dtype=np.uint8, mode="c"))
        except (OSError, ValueError) as exc:
            raise GgufError(f"cannot map {f}: {exc}") from None
    out: dict[str, GgufTensor] = {}
    for name, (file, offset, type_id, ne, nbytes) in index.items():
        mm = maps[file]
        if offset + nbytes > mm.size:
            raise GgufError(f"{paths[file].name}: tensor {name} runs past the end of the file (truncated?)")
        data = mm[offset:offset + nbytes]
        dtype = _FLOAT_DTYPES.get(type_id)
        if dtype is not None:
            data = data.view(dtype)
        out[name] = GgufTensor(name, type_id, tuple(ne), data, file, offset)
    return GgufCheckpoint(paths, {}, out, maps)


def advise_sequential(ckpt: GgufCheckpoint) -> None:
    """Ask the kernel to read the weights ahead (first load from disk) in large pages where it can."""
    ckpt.advise(*(a for a in (getattr(mmap, "MADV_WILLNEED", None), getattr(mmap, "MADV_HUGEPAGE", None))
                  if a is not None))


MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14+; older kernels refuse it (a no-op here)


def mem_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def prefault(ckpt: GgufCheckpoint, headroom: int = 3 << 30) -> bool:
    """Fault every page of the weights into this process now, when the files fit in the memory available with
    ``headroom`` to spare (the KV cache, the runtime): llama.cpp reads its whole file at load too. Without it a
    token routed to an expert no earlier token used waits on page faults, from disk when the page cache lost
    the file: the real-shape decode ran 200 -> 168 ms/token over its first 128 tokens as the pages came in.
    Returns whether it ran (False: too big for this machine's memory, pages then come in as tokens need them)."""
    need, avail = ckpt.nbytes, mem_available()
    if avail is None or need + headroom > avail:
        logger.info("GGUF: %.1f GiB of weights, %.1f GiB available: pages load as the tokens use them",
                    need / 2**30, (avail or 0) / 2**30)
        return False
    ckpt.advise(MADV_POPULATE_READ)
    return True
