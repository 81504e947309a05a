"""Typed errors. Each user-facing class carries the exit code the CLI maps it to.

User errors (bad input, infeasible budget, missing device or runtime) are kept apart from
`InternalError`, which means a bug in edgeprune or in a library beneath it.
"""

from __future__ import annotations


class EdgepruneError(Exception):
    """Base class: a one-line message naming the bad value, what was allowed, and the fix."""

    exit_code = 1


class ConfigError(EdgepruneError):
    """Bad command-line input, option value, data file or output directory."""

    exit_code = 2


class ProfileError(ConfigError):
    """A device profile that is unknown, malformed or inconsistent."""


class ModelError(ConfigError):
    """A model spec, weights file or input shape that cannot be used."""


class UnsupportedModelError(ConfigError):
    """A model that a target cannot take (names the op or module and the target)."""


class BudgetInfeasibleError(EdgepruneError):
    """No plan meets the budget (the report still says which budget binds)."""

    exit_code = 3
    rounds: list = []
    """The planner's rounds behind the verdict (dicts), set by the planner."""
    proven: bool = False
    """True when measurements beyond noise back the verdict; False when it rests on predictions."""


class MissingDependencyError(EdgepruneError):
    """An optional runtime is not installed; the message carries the pip line that installs it."""

    exit_code = 4

    def __init__(self, module: str, extra: str):
        self.module = module
        self.extra = extra
        super().__init__(
            f"python module '{module}' is not installed; install it with: pip install 'edgeprune[{extra}]'"
        )


class DeviceError(EdgepruneError):
    """A device or runtime that is unavailable or failed while measuring."""

    exit_code = 4


class ParityError(EdgepruneError):
    """An exported artifact whose outputs disagree with the PyTorch model it came from."""

    exit_code = 1


class InternalError(EdgepruneError):
    """A bug in edgeprune (or a library it drives), not a problem with the user's input."""

    exit_code = 1


class OutputError(EdgepruneError):
    """The output folder's filesystem cannot take the build (full disk, quota or file size limit): the message names
    the folder and the fix; the previous output is left as it was. Exit 2, like a bad output folder."""

    exit_code = 2
