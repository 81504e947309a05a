"""The planner's evaluator: prunes a candidate, recovers it and scores it on the validation split.

The planner (`edgeprune.planner`) chooses; this module does the work it chooses by, so the planner never prunes or
trains by itself. The sensitivity analysis's many small evaluations (a stage pruned alone, BatchNorm re-estimated,
scored on a validation subset) run through an `Executor`: in this process, a local process pool or a Ray cluster.
The brief fine-tunes of the candidates a device ranks run there too, side by side when there are several workers;
the chosen plan's full fine-tune runs here.

`planner_for` wires an evaluator and a `Planner` together; it is what the pipeline, the benches and the tests call.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from edgeprune._cores import usable_cores
from edgeprune._progress import Steps
from edgeprune._torch import torch_threads
from edgeprune.errors import ConfigError
from edgeprune.executor import Executor, get_executor
from edgeprune.metrics import Metric
from edgeprune.outputs import describe, leaves
from edgeprune.planner.journal import Journal
from edgeprune.planner.planner import Planner
from edgeprune.planner.results import Tuned
from edgeprune.planner.settings import PlanSettings
from edgeprune.profiles import Budget
from edgeprune.prune import IMPORTANCE, as_tensor, channel_groups, pruned_architecture, recalibrate_bn
from edgeprune.recover import RecoveryConfig, RecoverySummary
from edgeprune.schedule import prune_and_recover
from edgeprune.structure import describe as describe_structure
from edgeprune.scoring import score_outputs
from edgeprune.shifts import shifted
from edgeprune.stats import class_drops
from edgeprune.types import SINGLE_OUTPUT_KEY, ChannelGroup, Dataset, ModelSpec, Plan, PruneSummary
from edgeprune.vision_heads import postprocess_of


def check_criteria(importances: Sequence[str]) -> None:
    """Every importance criterion named is one pruning knows."""
    unknown = [i for i in importances if i not in IMPORTANCE]
    if unknown or not importances:
        raise ConfigError(f"--importance {','.join(importances)}: choose from {', '.join(IMPORTANCE)}")


def predict_classes(model: torch.nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(as_tensor(x[i : i + batch_size])).argmax(1).numpy()
                               for i in range(0, len(x), batch_size)])


def class_accuracy(correct: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Top-1 of each class present in `labels`, from whether each sample was classified right."""
    return {int(c): float(correct[labels == c].mean()) for c in np.unique(labels)}


@dataclass(frozen=True)
class ValScore:
    """How the planner scores a model on validation data, higher always better: top-1 accuracy (a fraction; drops
    in points) without a metric, else the metric's value, negated for a lower-is-better one (drops in its units)."""

    metric: Metric | None = None
    keys: tuple[str, ...] = (SINGLE_OUTPUT_KEY,)
    """The model's output keys, in flattening order (`outputs.describe`)."""
    postprocess: Callable[[Any], Any] | None = None
    """A detector's decoding of its raw heads (`vision_heads.postprocess_of`), for detection metrics."""

    @property
    def top1(self) -> bool:
        return self.metric is None or self.metric.name == "top1"

    @property
    def name(self) -> str:
        return "accuracy" if self.metric is None else self.metric.name

    @property
    def unit(self) -> str:
        return "points" if self.metric is None else self.metric.name

    @property
    def drop_scale(self) -> float:
        """From a score difference to the budget's unit: points for top-1, the metric's own units otherwise."""
        return 100.0 if self.metric is None else 1.0

    def max_drop(self, budget: Budget) -> float | None:
        """The budget that bounds this score's drop: `max_accuracy_drop_pct` for top-1, `max_metric_drop` for a
        metric."""
        return budget.max_accuracy_drop_pct if self.metric is None else budget.max_metric_drop

    def correct(self, model: torch.nn.Module, x: np.ndarray, y: Any, labelled: bool) -> np.ndarray | None:
        """Whether each sample of (x, y) is classified right (top-1), for the class guard; None without class labels
        or when judged by a metric."""
        if self.metric is not None or not labelled:
            return None
        return predict_classes(model, x) == y

    def __call__(self, model: torch.nn.Module, x: np.ndarray, y: Any) -> float:
        if self.metric is None:
            return float((predict_classes(model, x) == y).mean())
        model.eval()
        with torch.no_grad():
            batches = [leaves(model(as_tensor(x[i : i + 64]))) for i in range(0, len(x), 64)]
        outputs = {key: np.concatenate([b[j].numpy() for b in batches]) for j, key in enumerate(self.keys)}
        value = score_outputs(self.metric, outputs, y, postprocess=self.postprocess,
                              source="the validation split").value()
        return value if self.metric.higher_is_better else -value


def _defined_interactively(model: torch.nn.Module) -> bool:
    """Whether a layer's class lives only in an interactive session (a notebook's `__main__` has no file), where
    process workers cannot import it: the analysis then runs in this process."""
    main = sys.modules.get("__main__")
    return getattr(main, "__file__", None) is None and any(
        type(m).__module__ == "__main__" for m in model.modules())


def _executor_kind(asked: str | None, model: torch.nn.Module) -> str:
    """The executor to run on: `asked`, or (None) a process pool where its workers can start safely, else this
    process. Process workers import the main module again: by name when the program runs as a module (`edgeprune`,
    `python -m ...`), harmless; by path for a script, which re-runs an unguarded script's top level. A model whose
    layers were defined in a notebook cannot travel to them at all."""
    if _defined_interactively(model) and asked in (None, "process"):
        return "serial"
    if asked is not None:
        return asked
    main = sys.modules.get("__main__")
    by_name = getattr(getattr(main, "__spec__", None), "name", None) is not None
    console_script = Path(getattr(main, "__file__", "") or "").name == "edgeprune"
    return "process" if by_name or console_script else "serial"


@dataclass(frozen=True)
class _SensitivityJob:
    """What every sensitivity evaluation needs, sent to each worker once."""

    module: torch.nn.Module
    example: torch.Tensor
    calib: torch.Tensor
    x: np.ndarray
    y: Any
    score: ValScore


def _score_pruned(job: _SensitivityJob, plan: Plan) -> float:
    """Accuracy on the job's subset of the dense model pruned by `plan`, BatchNorm re-estimated, not fine-tuned."""
    model = job.module
    if plan.prunes:
        model = pruned_architecture(job.module, job.example, plan, calibration=job.calib)
        recalibrate_bn(model, job.calib)
        model.eval()
    return job.score(model, job.x, job.y)


@dataclass(frozen=True)
class _TuneJob:
    """What every fine-tune needs, sent to each worker once."""

    module: torch.nn.Module
    example: torch.Tensor
    calib: torch.Tensor
    dataset: Dataset
    val_x: np.ndarray
    val_y: Any
    seed: int
    score: ValScore
    labelled: bool
    shifted_x: np.ndarray | None = None
    """The validation inputs under every corruption (`shifts.shifted`) when the robustness guard is on."""


def _tune_pruned(job: _TuneJob, item: tuple[Plan, int]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """`item`'s plan pruned and fine-tuned for its epochs (in a worker, on one thread); its weights and facts."""
    plan, epochs = item
    return CandidateEvaluator.tuned_record(_prune_and_recover(job, plan, epochs, threads=1))


def _prune_and_recover(job: _TuneJob, plan: Plan, epochs: int, threads: int | None = None) -> Tuned:
    """`plan` pruned (BatchNorm re-estimated) and fine-tuned `epochs` by `schedule.prune_and_recover` (what `apply`
    replays), scored on the validation split; the unpruned model itself for a plan that prunes nothing."""
    prunes = plan.prunes
    model, summary, recovery = prune_and_recover(job.module, job.example, job.calib, plan, job.dataset,
                                                 epochs if prunes else 0, job.seed, threads=threads)
    if not prunes:
        model = job.module
    ok = job.score.correct(model, job.val_x, job.val_y, job.labelled)
    return Tuned(model, job.score(model, job.val_x, job.val_y), summary, recovery,
                 None if ok is None else class_accuracy(ok, job.val_y),
                 _shift_accuracy(job, model), val_correct=ok)


def _shift_accuracy(job: _TuneJob, model: torch.nn.Module) -> float | None:
    """Top-1 on the shifted validation inputs (None when the robustness guard is off)."""
    if job.shifted_x is None:
        return None
    return float((predict_classes(model, job.shifted_x) == np.tile(job.val_y, len(job.shifted_x) // len(job.val_x))).mean())


class CandidateEvaluator:
    """Prunes, recovers and scores candidates of one model on one data set's validation split."""

    def __init__(self, spec: ModelSpec, dataset: Dataset, settings: PlanSettings, metric: Metric | None = None,
                 shift_guard: bool = False):
        check_criteria(settings.importances)
        if dataset.val_x is None or len(dataset.val_x) == 0:
            raise ConfigError(f"data '{dataset.source}' has no validation split to plan on; load it with "
                              "edgeprune.data (load_data or dataset_from_arrays), which splits train/validation/test")
        self.spec, self.dataset, self.settings = spec, dataset, settings
        self.dense = spec.module
        self.example = torch.zeros(spec.input_shape)
        self.calib = as_tensor(dataset.calib_x)
        # every choice is scored on the validation split; the test split stays held out for the report
        self.val_x = dataset.val_x
        top1 = metric is not None and metric.name == "top1" and metric.output is None
        self.score = ValScore(None if top1 else metric, describe(spec.module, self.example).keys,
                              postprocess_of(spec.module))
        self.labelled = dataset.labelled
        if dataset.val_y is not None:
            self.val_y = dataset.val_y
        else:  # unlabelled: top-1 agreement with the unpruned model; a metric that needs no labels gets none
            self.val_y = predict_classes(spec.module, self.val_x) if self.score.metric is None else None
        self.dense_accuracy = self.score(spec.module, self.val_x, self.val_y)
        self.dense_val_correct = self.score.correct(spec.module, self.val_x, self.val_y, self.labelled)
        self.dense_class_accuracy = (None if self.dense_val_correct is None else
                                     class_accuracy(self.dense_val_correct, self.val_y))
        # the robustness guard scores top-1 models on labelled data only
        guarded = shift_guard and self.labelled and self.score.metric is None
        self._shifted_x = shifted(self.val_x)[0] if guarded else None
        self.dense_shift_accuracy = _shift_accuracy(self._tune_job(), spec.module) if guarded else None
        n = min(settings.sensitivity_samples, len(self.val_x))
        self._subset = np.random.default_rng(settings.seed).permutation(len(self.val_x))[:n]
        self._executor: Executor | None = None

    @property
    def sensitivity_samples(self) -> int:
        return len(self._subset)

    @property
    def workers(self) -> int:
        """How many evaluations run at once (the executor's workers; it starts on first use)."""
        return self._pool().workers

    def _pool(self) -> Executor:
        if self._executor is None:
            s = self.settings
            self._executor = get_executor(_executor_kind(s.executor, self.dense), workers=s.workers,
                                          address=s.ray_address)
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def channel_groups(self) -> list[ChannelGroup]:
        return channel_groups(self.dense, self.example)

    def encoder_structure(self) -> dict:
        """The transformer encoder's heads, MLP widths and blocks (`structure.describe`; empty where none)."""
        return describe_structure(self.dense)

    def architecture(self, plan: Plan) -> torch.nn.Module:
        """The dense model pruned to `plan`'s shapes (weights as pruning left them, BatchNorm not re-estimated: for
        timing and tracing); the dense model itself for a plan that prunes nothing."""
        if not plan.prunes:
            return self.dense
        return pruned_architecture(self.dense, self.example, plan)

    def sensitivity_scores(self, plans: Sequence[Plan]) -> list[float]:
        """Validation-subset accuracy of each plan applied alone (no fine-tune), run on the executor."""
        subset = None if self.val_y is None else _take(self.val_y, self._subset)
        job = _SensitivityJob(self.dense, self.example, self.calib, self.val_x[self._subset], subset, self.score)
        return self._pool().map(_score_pruned, list(plans), shared=job)

    def _tune_job(self) -> _TuneJob:
        return _TuneJob(self.dense, self.example, self.calib, self.dataset, self.val_x, self.val_y, self.settings.seed,
                        self.score, self.labelled, self._shifted_x)

    def tune(self, plan: Plan, epochs: int) -> Tuned:
        """`plan` pruned, fine-tuned `epochs` and scored on the validation split, in this process with torch on every
        usable core."""
        with torch_threads(usable_cores()):
            return _prune_and_recover(self._tune_job(), plan, epochs)

    def tune_many(self, plans: Sequence[Plan], epochs: int) -> list[Tuned]:
        """`tune` of each plan (each prunes something), run on the executor's workers side by side."""
        records = self._pool().map(_tune_pruned, [(plan, epochs) for plan in plans], shared=self._tune_job())
        return [self.tuned_from_record(plan, state, facts) for plan, (state, facts) in zip(plans, records)]

    # ------------------------------------------------------------------ journal form of a fine-tuned candidate
    @staticmethod
    def tuned_record(tuned: Tuned) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(weights, facts) of a fine-tuned candidate, for the journal."""
        facts = {"accuracy": tuned.accuracy, "summary": tuned.summary.to_dict(),
                 "recovery": tuned.recovery.to_dict() if tuned.recovery else None,
                 "class_accuracy": None if tuned.class_accuracy is None else
                 [[c, a] for c, a in sorted(tuned.class_accuracy.items())], "shift_accuracy": tuned.shift_accuracy,
                 "val_correct": None if tuned.val_correct is None else "".join("01"[int(v)] for v in tuned.val_correct)}
        return tuned.model.state_dict(), facts

    def tuned_from_record(self, plan: Plan, state: dict[str, torch.Tensor], facts: dict[str, Any]) -> Tuned:
        model = self.architecture(plan)
        model.load_state_dict(state)
        model.eval()
        s = facts["summary"]
        summary = PruneSummary(**{**s, "channels": {k: tuple(v) for k, v in s["channels"].items()}})
        recovery = None
        if facts["recovery"] is not None:
            r = {k: v for k, v in facts["recovery"].items() if k != "method"}
            recovery = RecoverySummary(**{**r, "config": RecoveryConfig(**r["config"]),
                                          "val_scores": tuple(r.get("val_scores", ()))})
        per_class, ok = facts.get("class_accuracy"), facts.get("val_correct")
        return Tuned(model, facts["accuracy"], summary, recovery,
                     None if per_class is None else {int(c): float(a) for c, a in per_class},
                     facts.get("shift_accuracy"), val_correct=None if ok is None else np.array([v == "1" for v in ok]))

    def class_drops(self, tuned: Tuned) -> dict[int, tuple[float, float, float]] | None:
        """Each class's top-1 drop on the validation split vs the unpruned model, in points, with its paired 95%
        interval (`class_drops`); None without per-sample figures (no class labels, or a metric)."""
        if self.dense_val_correct is None or tuned.val_correct is None:
            return None
        return class_drops(self.val_y, self.dense_val_correct, tuned.val_correct)


def _take(labels: Any, idx: np.ndarray) -> Any:
    """Labels of the samples `idx`: an array's rows, or a list's items (per-image detection targets)."""
    return labels[idx] if isinstance(labels, np.ndarray) else [labels[i] for i in idx]


@contextmanager
def planner_for(spec: ModelSpec, dataset: Dataset, settings: PlanSettings, steps: Steps | None = None,
                journal: Journal | None = None, metric: Metric | None = None,
                shift_guard: bool = False) -> Iterator[Planner]:
    """A `Planner` for `spec` on `dataset` (scoring by `metric`, top-1 when None; with `shift_guard`, top-1 on
    shifted validation inputs too), its evaluator's executor shut down on exit."""
    evaluator = CandidateEvaluator(spec, dataset, settings, metric, shift_guard)
    try:
        yield Planner(evaluator, settings, steps, journal)
    finally:
        evaluator.close()
