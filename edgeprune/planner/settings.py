"""How a search runs: `PlanSettings` (the options of `edgeprune plan` and of a budget-driven build)."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.errors import ConfigError
from edgeprune.executor import EXECUTORS

SCHEME_PREFERENCE = ("fp32", "fp16", "int8-dynamic", "int8")
"""At equal estimated accuracy, the scheme that loses least to rounding wins."""
STRATEGIES = ("greedy", "optuna")
OBJECTIVES = ("accuracy", "latency")


@dataclass(frozen=True)
class PlanSettings:
    """How the search runs (`edgeprune plan` / budget-driven `edgeprune build` options)."""

    schemes: tuple[str, ...] = ("fp32", "int8")
    importances: tuple[str, ...] = ("l2", "fpgm")
    """Channel importance criteria searched (each gets its own sensitivity analysis)."""
    threads: int | None = None
    """Thread count of every plan; None searches 1, 2, 4, ... up to the device profile's `default_threads`."""
    strategy: str = "greedy"
    objective: str = "accuracy"
    """'accuracy': the most accurate plan within every budget; 'latency': the fastest within max_accuracy_drop_pct."""
    time_budget_s: float | None = None
    finetune_epochs: int = 10
    """Fine-tune epochs of the chosen plan (what `edgeprune apply` replays)."""
    rank_epochs: int = 3
    """Fine-tune epochs of each of the `top_k` candidates while ranking them (at most `finetune_epochs`)."""
    iterative_steps: int = 3
    """When the chosen plan removes over half the MACs (`planner.ITERATIVE_BELOW_MACS`), it is also fine-tuned
    pruned in this many steps (`Plan.prune_steps`), and the schedule scoring higher on validation is kept; 1: one-shot
    only."""
    top_k: int = 3
    """Candidates fine-tuned briefly and evaluated per device before one is chosen."""
    margin: float = 0.05
    """Predicted costs must stay this share under each budget (room for measurement noise)."""
    max_rounds: int = 3
    sensitivity_samples: int = 512
    optuna_trials: int = 150
    seed: int = 0
    executor: str | None = None
    """Where the sensitivity analysis runs: 'serial' (this process), 'process' (a local pool), 'ray' (a cluster).
    None: a local pool when that is safe (the CLI, or any program run as a module), else this process: a pool's
    workers import the main script again, which re-runs an unguarded script's top-level code; ask for 'process'
    explicitly from a script whose entry point is under `if __name__ == "__main__":`."""
    workers: int | None = None
    """Executor workers; None: one per core (local pool) or what the Ray cluster offers."""
    ray_address: str | None = None
    """Address of a running Ray cluster (executor 'ray'); None starts a local instance."""
    storage: str | None = None
    """Optuna storage URL (sqlite:///file.db, or a database several workers share); None keeps the study in memory."""

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy {self.strategy} is unknown; choose one of: {', '.join(STRATEGIES)}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--minimize/objective {self.objective} is unknown; choose one of: {', '.join(OBJECTIVES)}")
        bad = [s for s in self.schemes if s not in SCHEME_PREFERENCE]
        if bad or not self.schemes:
            raise ConfigError(f"--schemes {','.join(self.schemes)}: choose from {', '.join(SCHEME_PREFERENCE)}")
        if not self.importances:  # the names are checked by the evaluator, which owns the criteria
            raise ConfigError("--importance is empty; give at least one criterion (e.g. l2)")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads} must be >= 1")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigError(f"--time-budget {self.time_budget_s} must be a positive number of seconds")
        if not 1 <= self.max_rounds <= 10 or self.top_k < 1 or not 0 <= self.margin < 0.5:
            raise ConfigError("plan settings out of range: 1 <= max_rounds <= 10, top_k >= 1, 0 <= margin < 0.5")
        if self.iterative_steps < 1:
            raise ConfigError(f"--iterative-steps {self.iterative_steps} must be >= 1 (1: one-shot only)")
        if self.rank_epochs < 0 or self.finetune_epochs < 0:
            raise ConfigError(f"--rank-epochs {self.rank_epochs} and --finetune-epochs {self.finetune_epochs} "
                              "must be >= 0")
        if self.executor is not None and self.executor not in EXECUTORS:
            raise ConfigError(f"--executor {self.executor} is unknown; choose one of: {', '.join(EXECUTORS)}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers {self.workers} must be >= 1")
        if self.ray_address is not None and self.executor != "ray":
            raise ConfigError(f"--ray-address {self.ray_address} needs --executor ray")
        if self.storage is not None and self.strategy != "optuna":
            raise ConfigError(f"--storage {self.storage} is an Optuna study: it needs --strategy optuna")
