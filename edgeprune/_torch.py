"""Small torch helpers shared by the stages."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with torch's intra-op thread count set to `n`, then restore it.

    Batch-1 PyTorch work on a small, shared machine is much faster (and repeatable) on one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
