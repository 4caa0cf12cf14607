"""The GGUF tensor types the quantized kernels read: ggml's ids, block geometry, and random valid blocks.

The ids and sizes are ggml's (``gguf.GGMLQuantizationType`` / ``GGML_QUANT_SIZES`` name the same numbers);
quant_blocks.h has the same table for the C++ side. ``random_blocks`` makes well-formed blocks of any type with
weights of a chosen spread: the kernels' self-test, the tests and the real-shape benchmark file use it (the
``gguf`` package quantizes only some of these types).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class QuantType:
    """One ggml tensor type: ``block_values`` values stored in ``block_bytes`` bytes."""

    name: str
    id: int
    block_values: int
    block_bytes: int

    def row_bytes(self, cols: int) -> int:
        """Bytes of one row of ``cols`` values (a whole number of blocks)."""
        if cols % self.block_values:
            raise ValueError(f"{self.name}: a row of {cols} values is not whole blocks of {self.block_values}")
        return cols // self.block_values * self.block_bytes


# The quantized types (run through the kernels) and the float ones (F32 matrices run on torch's matmul).
QUANT_TYPES = {t.name: t for t in (
    QuantType("Q4_K", 12, 256, 144),
    QuantType("Q5_K", 13, 256, 176),
    QuantType("Q6_K", 14, 256, 210),
    QuantType("Q8_0", 8, 32, 34),
    QuantType("Q4_0", 2, 32, 18),
    QuantType("Q5_0", 6, 32, 22),
    QuantType("F16", 1, 1, 2),
    QuantType("BF16", 30, 1, 2),
)}
F32 = QuantType("F32", 0, 1, 4)
SUPPORTED_TYPES = {**QUANT_TYPES, "F32": F32}
BY_ID = {t.id: t for t in SUPPORTED_TYPES.values()}

# Byte offsets of the float16 scales in each block: (d, dmin) or (d,) (ggml-common.h).
_SCALE_OFFSETS = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,), "Q8_0": (0,), "Q4_0": (0,), "Q5_0": (0,)}


def random_blocks(qtype: QuantType, rows: int, cols: int, gen: torch.Generator, std: float = 0.02) -> torch.Tensor:
    """rows x cols random weights of ``qtype`` as raw bytes (uint8 [rows * row_bytes]), about N(0, std)-sized.

    Quantized values, sub-block scales and mins are uniform random bytes; the float16 block scales are set so
    the weights come out roughly centred with spread ``std`` (for Q4_K / Q5_K: dmin * mean min ~ d * mean scale
    * mean value). Every block is valid: any bytes are, once the float16 fields are finite.
    """
    if qtype.block_values == 1:  # F32 / F16 / BF16: the values themselves
        values = torch.randn(rows, cols, generator=gen) * std
        dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[qtype.name]
        return values.to(dtype).view(torch.uint8).reshape(-1)
    nblocks = rows * cols // qtype.block_values
    raw = torch.randint(0, 256, (nblocks, qtype.block_bytes), generator=gen, dtype=torch.uint8)
    levels = {"Q4_K": 15, "Q5_K": 31, "Q6_K": 63, "Q8_0": 127, "Q4_0": 15, "Q5_0": 31}[qtype.name]
    # spread of a uniform level times a mean 6-bit scale of ~32 (K-quants), or of the level alone
    unit = std * 12**0.5 / levels / (32.0 if qtype.name in ("Q4_K", "Q5_K", "Q6_K") else 1.0)
    if qtype.name == "Q6_K":
        unit *= 0.5  # Q6_K's scales are signed int8 (mean |scale| ~ 64, not ~ 32)
    d = (unit * (0.5 + torch.rand(nblocks, generator=gen))).to(torch.float16)
    offsets = _SCALE_OFFSETS[qtype.name]
    raw[:, offsets[0]:offsets[0] + 2] = d.view(torch.uint8).reshape(nblocks, 2)
    if len(offsets) == 2:  # dmin: centre the values (mean scale 31.5 * mean level, against a mean min of 31.5)
        dmin = (d.float() * (levels / 2.0)).to(torch.float16)
        raw[:, offsets[1]:offsets[1] + 2] = dmin.view(torch.uint8).reshape(nblocks, 2)
    return raw.reshape(-1)
