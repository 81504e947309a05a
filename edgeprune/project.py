"""Project config (`edgeprune.yaml`): the models, devices, targets, budgets and output folder an app build needs,
built incrementally.

    schema_version: 1
    out: dist                      # relative to this file's folder
    models:
      digits:                      # built into dist/digits/<device>/
        model: examples:digits
        devices: [pixel-8, galaxy-a14]
        targets: [executorch]
        budgets: {latency_ms: 5, size_mb: 1}
        plan: {prune: 0.5, quant: int8}   # a fixed plan; leave out to search for the budgets (`search:` tunes it)

A model whose inputs are unchanged since its last build (config entry, weights, data, device profiles, model code,
edgeprune version: `inputs_sha256`) and whose artifacts are all in place is not rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import edgeprune
from edgeprune._io import atomic_write_json, sha256_file
from edgeprune.errors import ConfigError
from edgeprune.profiles import load_profile

CONFIG_SCHEMA_VERSION = 1
STAMP_NAME = "build-inputs.json"
"""Written into each model's output folder after a build: the inputs' digest and the verdict."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budgets(_Strict):
    latency_ms: float | None = Field(None, gt=0, description="latency budget per inference, ms")
    size_mb: float | None = Field(None, gt=0, description="model file size budget, MB")
    memory_mb: float | None = Field(None, gt=0, description="peak memory budget, MB")
    energy_mj: float | None = Field(None, gt=0, description="energy per inference budget, mJ")
    max_accuracy_drop_pts: float | None = Field(None, ge=0, description="allowed top-1 drop, points")


class FixedPlanConfig(_Strict):
    prune: float = Field(0.0, ge=0, lt=1, description="fraction of prunable channels removed")
    quant: str = Field("fp32", description="fp32 | fp16 | int8 | int8-dynamic")
    importance: str = Field("l2", description="channel importance criterion")
    round_to: int = Field(8, ge=1, description="round pruned channel counts to this multiple")
    finetune_epochs: int = Field(10, ge=0, description="distillation epochs after pruning")
    threads: int | None = Field(None, ge=1, description="threads the artifact runs with")


class SearchConfig(_Strict):
    schemes: tuple[str, ...] = Field(("fp32", "int8"), description="quantisation schemes the search may choose")
    importances: tuple[str, ...] = Field(("l2", "fpgm"), description="importance criteria searched")
    strategy: str = Field("greedy", description="greedy | optuna")
    time_budget_s: float | None = Field(None, gt=0, description="seconds the search may take")
    threads: int | None = Field(None, ge=1, description="pin the thread count (default: searched)")
    finetune_epochs: int = Field(10, ge=0, description="fine-tune epochs of the chosen plan")
    rank_epochs: int = Field(3, ge=0, description="brief fine-tune epochs while ranking candidates")


class MeasureConfig(_Strict):
    on: str = Field("host", description="host, adb:SERIAL or ssh:user@host[:port]")
    runs: int = Field(50, ge=1)
    warmup: int = Field(10, ge=0)
    blocks: int = Field(3, ge=1)


class ModelEntry(_Strict):
    model: str = Field(description="examples:digits, torchvision:NAME, timm:NAME or pkg.module:factory")
    weights: str | None = Field(None, description="state_dict file, relative to the config file")
    input_shape: tuple[int, ...] | None = Field(None, description="batch-1 input shape, e.g. [1, 3, 224, 224]")
    data: str | None = Field(None, description="data spec or path (relative to the config file)")
    devices: tuple[str, ...] = Field(("host",), min_length=1, description="profile names or profile .yaml paths")
    targets: tuple[str, ...] = Field((), description="export targets (default: every supported one)")
    budgets: Budgets = Field(default_factory=Budgets)
    plan: FixedPlanConfig | None = Field(None, description="a fixed plan; leave out to search for the budgets")
    search: SearchConfig | None = Field(None, description="search settings (only without `plan`)")
    seed: int = 0


class ProjectConfig(_Strict):
    schema_version: int = Field(description=f"must be {CONFIG_SCHEMA_VERSION}")
    out: str = Field("dist", description="output folder, relative to the config file")
    models: dict[str, ModelEntry] = Field(min_length=1, description="model name -> what to build")
    measure: MeasureConfig = Field(default_factory=MeasureConfig)

    @field_validator("schema_version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != CONFIG_SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is not supported; this edgeprune reads {CONFIG_SCHEMA_VERSION}")
        return value

    @field_validator("models")
    @classmethod
    def _names(cls, models: dict[str, ModelEntry]) -> dict[str, ModelEntry]:
        for name in models:
            if not name or name.startswith(".") or "/" in name or "\\" in name:
                raise ValueError(f"model name '{name}' must be a plain folder name (no '/', not starting with '.')")
        return models


def load_config(path: str | Path) -> tuple[ProjectConfig, Path]:
    """Parse and check an edgeprune.yaml; returns the config and the folder its relative paths start from."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config '{path}' does not exist; write an edgeprune.yaml (see README, 'Project config')") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"config '{path}' is not readable YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config '{path}' must be a YAML mapping with schema_version, out and models")
    try:
        config = ProjectConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"config '{path}': {where}: {err['msg']}") from None
    for entry in config.models.values():
        if entry.plan is not None and entry.search is not None:
            raise ConfigError(f"config '{path}': a model has both plan (fixed) and search; keep one")
    return config, path.resolve().parent


def _rel(base: Path, value: str | None) -> str | None:
    """A path from the config, made absolute against its folder (specs with ':' and missing files stay as given)."""
    if value is None or (":" in value and not Path(value).exists() and not (base / value).exists()):
        return value
    return str((base / value).resolve())


def _device(base: Path, device: str) -> str:
    """A built-in profile name as given; a profile .yaml path made absolute against the config's folder."""
    return str((base / device).resolve()) if device.endswith((".yaml", ".yml")) or "/" in device else device


def _digest_path(path: Path) -> str:
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + sha256_file(file).encode())
    return digest.hexdigest()


def _model_code_digest(spec: str) -> str:
    """The model's code: the factory module's source file, or the architecture library's version."""
    from edgeprune._deps import package_version

    kind, _, name = spec.partition(":")
    if kind in ("torchvision", "timm"):
        return f"{kind}=={package_version(kind)}"
    if kind == "examples":
        return f"edgeprune=={edgeprune.__version__}"
    found = importlib.util.find_spec(kind) if kind else None
    if found is None or not found.origin or not Path(found.origin).is_file():
        return f"{spec} (source not found)"
    return sha256_file(Path(found.origin))


def inputs_digest(entry: ModelEntry, base: Path, measure: MeasureConfig) -> str:
    """sha256 over everything a model's build depends on: config entry, weights, data, profiles, code, versions."""
    parts: dict[str, Any] = {
        "entry": entry.model_dump(mode="json"),
        "measure": measure.model_dump(mode="json"),
        "edgeprune": edgeprune.__version__,
        "code": _model_code_digest(entry.model),
        "profiles": [load_profile(_device(base, d)).model_dump(mode="json") for d in entry.devices],
    }
    for key in ("weights", "data"):
        value = _rel(base, getattr(entry, key))
        parts[key] = _digest_path(Path(value)) if value and Path(value).exists() else value
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _up_to_date(folder: Path, digest: str) -> dict[str, Any] | None:
    """The stamp of an earlier build with the same inputs whose artifacts are all in place, else None."""
    try:
        stamp = json.loads((folder / STAMP_NAME).read_text())
        if stamp.get("inputs_sha256") != digest:
            return None
        for device in stamp["devices"]:
            manifest = json.loads((folder / device / "manifest.json").read_text())
            for art in manifest["artifacts"]:
                if sha256_file(folder / device / Path(art["path"]).name) != art["sha256"]:
                    return None
        return stamp
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class ModelOutcome:
    """One model of the config: built now or up to date, where, and whether every budget passed."""

    name: str
    folder: Path
    rebuilt: bool
    passed: bool
    inputs_sha256: str


def build_project(config_path: str | Path, *, force: bool = False, progress: bool = False, verbose: bool = False,
                  on_model: Callable[[ModelOutcome], None] | None = None) -> list[ModelOutcome]:
    """Build every model of an edgeprune.yaml whose inputs changed since its last build (all of them with `force`)."""
    from edgeprune.api import FixedPlan, Measure, PlanSettings, build

    config, base = load_config(config_path)
    out_root = base / config.out
    measure = Measure(on=config.measure.on, runs=config.measure.runs, warmup=config.measure.warmup,
                      blocks=config.measure.blocks)
    outcomes = []
    for name, entry in config.models.items():
        folder = out_root / name
        digest = inputs_digest(entry, base, config.measure)
        stamp = None if force else _up_to_date(folder, digest)
        if stamp is not None:
            outcome = ModelOutcome(name, folder, False, bool(stamp["passed"]), digest)
        else:
            if entry.plan is not None:
                plan: FixedPlan | PlanSettings = FixedPlan(**entry.plan.model_dump())
            else:
                s = entry.search or SearchConfig()
                plan = PlanSettings(schemes=s.schemes, importances=s.importances, strategy=s.strategy,
                                    time_budget_s=s.time_budget_s, threads=s.threads,
                                    finetune_epochs=s.finetune_epochs, rank_epochs=s.rank_epochs, seed=entry.seed)
            b = entry.budgets
            result = build(
                entry.model, _rel(base, entry.data), devices=[_device(base, d) for d in entry.devices], out=folder,
                targets=entry.targets, latency_ms=b.latency_ms, size_mb=b.size_mb, memory_mb=b.memory_mb,
                energy_mj=b.energy_mj, max_accuracy_drop_pts=b.max_accuracy_drop_pts, plan=plan, measure=measure,
                input_shape=entry.input_shape, weights=_rel(base, entry.weights), seed=entry.seed,
                progress=progress, verbose=verbose, _command=(f"edgeprune build --config {config_path}",),
            )
            atomic_write_json(folder / STAMP_NAME, {"inputs_sha256": digest, "passed": result.passed,
                                                    "devices": [d.folder.name for d in result.devices.values()]})
            outcome = ModelOutcome(name, folder, True, result.passed, digest)
        outcomes.append(outcome)
        if on_model is not None:
            on_model(outcome)
    return outcomes
