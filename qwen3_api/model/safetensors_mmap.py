"""Memory-mapped safetensors reading that gives the pages back after each tensor.

safetensors' own safe_open keeps every page it touched resident until the file is closed, so loading a
single-file checkpoint peaks at twice the model's size (the parameters plus the whole mapped file). Here each
tensor is a zero-copy view of the mapping; once it has been copied into its parameter, madvise(DONTNEED)
drops its pages (and those before it) from this process (they stay in the page cache), so the peak stays near the model's size.
Format: an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, the data.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,  # block-FP8 checkpoints (model/fp8.py)
    "F8_E5M2": torch.float8_e5m2,
}
_PAGE = mmap.PAGESIZE
_FAULT_AROUND = 256 * 1024  # Linux maps up to fault_around_bytes (64 KiB by default) around a fault


class SafetensorsFormatError(ValueError):
    """The file is not a readable safetensors file (the message names it)."""


@dataclass(slots=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int


class SafetensorsFile:
    """One mapped .safetensors file: header parsed eagerly, tensors viewed lazily and released one by one."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            try:
                (header_len,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(header_len))
            except (struct.error, ValueError) as exc:
                raise SafetensorsFormatError(f"{path} is not a safetensors file: {exc}") from None
            # ACCESS_COPY: a writable (private) view, so torch.frombuffer needs no read-only warning; never written
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if path.stat().st_size else None
        base = 8 + header_len
        self._released = 0  # pages before this offset have been given back
        self.tensors: dict[str, TensorInfo] = {}
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            if meta["dtype"] not in DTYPES:
                raise SafetensorsFormatError(f"{path}: tensor {name} has unsupported dtype {meta['dtype']}")
            start, end = meta["data_offsets"]
            self.tensors[name] = TensorInfo(DTYPES[meta["dtype"]], tuple(meta["shape"]), base + start, base + end)

    def view(self, name: str) -> torch.Tensor:
        """The tensor as a zero-copy view of the mapping (valid until release/close)."""
        info = self.tensors[name]
        count = (info.end - info.start) // torch.empty((), dtype=info.dtype).element_size()
        if count == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        flat = torch.frombuffer(self._map, dtype=info.dtype, count=count, offset=info.start)
        return flat.view(info.shape)

    def names_by_offset(self) -> list[str]:
        """Tensor names in file order: reading them so keeps the mapped pages a sliding window."""
        return sorted(self.tensors, key=lambda n: self.tensors[n].start)

    def release_through(self, name: str) -> None:
        """Drop every page up to the end of this tensor from the resident set. The kernel's fault-around maps
        cached pages next to a faulting one, including already released ones just before the next tensor, so
        each call also sweeps a window behind the previous end."""
        end = self.tensors[name].end
        if self._map is not None and end > self._released:
            self._map.madvise(mmap.MADV_DONTNEED, self._released, end - self._released)
            self._released = max(0, end // _PAGE * _PAGE - _FAULT_AROUND)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
