"""The exporter contract: one subclass per target, each owning its quantiser and lowering."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch

from edgeprune.errors import ConfigError
from edgeprune.types import Artifact, Plan


@dataclass(frozen=True)
class ExportResult:
    """The artifact, and the PyTorch callable it should agree with.

    `reference` maps a float32 input batch to float32 outputs exactly as the artifact was meant to
    compute them: the (pruned) fp32 module for fp32, the half module for fp16, the PT2E
    fake-quantised module for int8. Parity is judged against it.
    """

    artifact: Artifact
    reference: Callable[[torch.Tensor], torch.Tensor]


class Exporter(abc.ABC):
    """Writes one `Plan` of one model as a file for one runtime."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]
    extra: ClassVar[str | None] = None
    """The pip extra that installs this target's toolchain (None: a core dependency)."""

    def check_scheme(self, scheme: str) -> None:
        """Refuse, up front, a scheme this target cannot do."""
        if scheme not in self.schemes:
            raise ConfigError(
                f"target '{self.name}' cannot do --quant {scheme}; it supports: {', '.join(self.schemes)}"
            )

    @abc.abstractmethod
    def export(
        self,
        model: torch.nn.Module,
        example_input: torch.Tensor,
        calibration: torch.Tensor,
        plan: Plan,
        out_path: Path,
    ) -> ExportResult:
        """Export `model` (already pruned, in eval mode) per `plan` to `out_path`, atomically.

        `example_input` is one batch-1 float32 input; `calibration` is an (N, ...) float32 tensor
        of inputs used to calibrate static quantisation.
        """
