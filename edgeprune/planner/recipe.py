"""plan.yaml: a chosen plan as a versioned recipe that `edgeprune apply` replays on a fresh copy of the model.

It records the per-module keep ratios, scheme, target, importance, rounding, seed and pruning schedule (what decides
the artifact), the channel counts the pruning gave (checked on replay), the recovery settings, and the predicted
and measured costs for reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import edgeprune
from edgeprune._io import atomic_write_bytes
from edgeprune.errors import ConfigError
from edgeprune.types import SCHEMES, TARGETS, Plan

RECIPE_SCHEMA_VERSION = 1


def make_recipe(
    *,
    model: dict[str, Any],
    device: str,
    plan: Plan,
    channels: dict[str, tuple[int, int]],
    recovery: dict[str, Any] | None,
    predicted: dict[str, Any] | None,
    measured: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "schema_version": RECIPE_SCHEMA_VERSION,
        "edgeprune_version": edgeprune.__version__,
        "model": model,
        "device": device,
        "plan": {
            "target": plan.target,
            "scheme": plan.scheme,
            "importance": plan.importance,
            "round_to": plan.round_to,
            "threads": plan.threads,
            "seed": plan.seed,
            "layer_keep_ratios": {k: float(v) for k, v in sorted(plan.layer_keep_ratios.items())},
            **({"head_keep_ratio": plan.head_keep_ratio, "mlp_keep_ratio": plan.mlp_keep_ratio,
                "keep_blocks": plan.keep_blocks} if plan.restructures else {}),
            **({"prune_steps": plan.prune_steps} if plan.prune_steps > 1 else {}),
        },
        "channels": {k: [int(a), int(b)] for k, (a, b) in sorted(channels.items())},
        "recovery": _plain(recovery),
        "predicted": _plain(predicted),
        "measured": _plain(measured),
    }


def _plain(value: Any) -> Any:
    """YAML-safe copy: dataclasses and tuples become dicts and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return _plain(value.__dict__)
    return value


def write_plan_yaml(path: Path, recipe: dict[str, Any]) -> None:
    atomic_write_bytes(path, yaml.safe_dump(recipe, sort_keys=False).encode())


class Recipe:
    """A plan.yaml read back: the Plan to replay, the channel counts it must give, and its recovery epochs and
    threads (None: a plan written before threads were recorded; the replay then uses every usable core)."""

    def __init__(self, path: Path, plan: Plan, channels: dict[str, tuple[int, int]], finetune_epochs: int,
                 model: dict[str, Any], device: str, finetune_threads: int | None = None):
        self.path, self.plan, self.channels = path, plan, channels
        self.finetune_epochs, self.model, self.device = finetune_epochs, model, device
        self.finetune_threads = finetune_threads


def read_plan_yaml(path: Path) -> Recipe:
    """Parse and check a plan.yaml; every problem is a one-line ConfigError naming the file and the fix."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"plan '{path}' does not exist; give the plan.yaml that 'edgeprune build' or 'plan' wrote") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"plan '{path}' is not readable YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or "schema_version" not in data or not isinstance(data.get("plan"), dict):
        raise ConfigError(f"plan '{path}' is not an edgeprune plan.yaml (no schema_version / plan section)")
    version = data["schema_version"]
    if not isinstance(version, int) or version > RECIPE_SCHEMA_VERSION:
        raise ConfigError(
            f"plan '{path}' has schema_version {version!r}, newer than this edgeprune reads ({RECIPE_SCHEMA_VERSION}); "
            "upgrade edgeprune"
        )
    p = data["plan"]
    try:
        ratios = {str(k): float(v) for k, v in (p.get("layer_keep_ratios") or {}).items()}
        plan = Plan(
            target=str(p["target"]), scheme=str(p["scheme"]), keep_ratio=1.0, layer_keep_ratios=ratios,
            importance=str(p.get("importance", "l2")), round_to=int(p.get("round_to", 8)),
            threads=int(p.get("threads", 1)), seed=int(p.get("seed", 0)),
            head_keep_ratio=float(p.get("head_keep_ratio", 1.0)), mlp_keep_ratio=float(p.get("mlp_keep_ratio", 1.0)),
            keep_blocks=None if p.get("keep_blocks") is None else int(p["keep_blocks"]),
            prune_steps=int(p.get("prune_steps", 1)),
        )
        channels = {str(k): (int(v[0]), int(v[1])) for k, v in (data.get("channels") or {}).items()}
        recovery = data.get("recovery") or {}
        epochs = int((recovery.get("config") or {}).get("epochs", 0)) if recovery else 0
        threads = (recovery.get("config") or {}).get("threads") if recovery else None
        threads = None if threads is None else int(threads)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ConfigError(f"plan '{path}': malformed plan section ({type(exc).__name__}: {exc})") from None
    if (plan.threads < 1 or plan.round_to < 1 or plan.prune_steps < 1 or any(a < 1 or b < 1 for a, b in channels.values())
            or (threads is not None and threads < 1)):
        raise ConfigError(f"plan '{path}': threads, round_to, prune_steps and channel counts must be >= 1")
    if plan.target not in TARGETS or plan.scheme not in SCHEMES:
        raise ConfigError(f"plan '{path}': target '{plan.target}' / scheme '{plan.scheme}' unknown")
    bad = [k for k, v in ratios.items() if not 0.0 < v <= 1.0]
    if bad:
        raise ConfigError(f"plan '{path}': keep ratio of '{bad[0]}' must be in (0, 1]")
    return Recipe(Path(path), plan, channels, epochs, data.get("model") or {}, str(data.get("device", "")), threads)
