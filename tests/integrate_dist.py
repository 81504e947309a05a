"""One real build shared by the integrate and manifest-schema tests: the digits example pruned by half and
quantised to static int8, for host, pixel-8 and galaxy-a14, on every target (ExecuTorch, LiteRT, ONNX).

Built once per test session (measurement kept short: the tests read the files, not the timings).
"""

from __future__ import annotations

from pathlib import Path

_BUILT: dict[str, Path] = {}
DEVICES = ("host", "pixel-8", "galaxy-a14")


def built_dist(tmp_path_factory) -> Path:
    """The shared dist/ folder, built on first use."""
    if "dist" not in _BUILT:
        from edgeprune.pipeline import BuildRequest, build

        out = tmp_path_factory.mktemp("integrate-build") / "dist"
        build(BuildRequest(model="examples:digits", out=out, devices=DEVICES, prune=0.5, quant="int8",
                           runs=5, warmup=1, blocks=1))
        _BUILT["dist"] = out
    return _BUILT["dist"]
