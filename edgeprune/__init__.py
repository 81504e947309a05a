"""edgeprune: a trained PyTorch model plus a device's budgets in, a measured mobile model out.

The Python API (the CLI is a thin layer over it):

    import edgeprune
    result = edgeprune.build(model, (x, y), devices=["pixel-8"], latency_ms=5, targets=["executorch"], out="dist/")

`build`, `plan`, `apply`, `validate`, `load_profile`, and the option types `FixedPlan`, `PlanSettings`, `Measure`.
Importing this package loads no runtime SDK (nor torch): the API module loads on first use.
"""

from typing import Any

__version__ = "0.1.0"

_API = {"build", "plan", "apply", "validate", "FixedPlan", "Measure", "PlanSettings", "ValidationReport",
        "BuildResult"}
_ERRORS = {"EdgepruneError", "ConfigError", "ProfileError", "ModelError", "BudgetInfeasibleError",
           "MissingDependencyError", "DeviceError", "ParityError", "InternalError"}

__all__ = sorted(_API | _ERRORS | {"load_profile", "build_project"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from edgeprune import api

        return getattr(api, name)
    if name in _ERRORS:
        from edgeprune import errors

        return getattr(errors, name)
    if name == "load_profile":
        from edgeprune.profiles import load_profile

        return load_profile
    if name == "build_project":
        from edgeprune.project import build_project

        return build_project
    raise AttributeError(f"module 'edgeprune' has no attribute '{name}'")
