"""Where one checkpoint tensor lands in the model: the unit of the loader's layout (loader.py), shared with the
FP8 scales' layout (fp8_loader.py), which adds targets of its own."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(slots=True)
class TensorTarget:
    """Where one checkpoint tensor goes: rows [row_start, row_start + rows) of param (or of param[expert])."""

    param: torch.Tensor
    expert: int | None = None
    row_start: int = 0
    rows: int | None = None

    def view(self) -> torch.Tensor:
        """The destination tensor: the parameter, its expert slice and its row range."""
        dest = self.param if self.expert is None else self.param[self.expert]
        return dest if self.rows is None else dest.narrow(0, self.row_start, self.rows)
