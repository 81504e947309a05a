"""Optuna search on a shared storage: two real processes on one sqlite study see each other's trials; a storage
Optuna cannot open is a one-line ConfigError."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgeprune.errors import ConfigError
from edgeprune.planner.search import Limits, optuna_search
from edgeprune.planner.space import Bucket, SearchSpace

# One worker: a small space with cheap, deterministic costs and proxy (no model), `trials` trials on the storage;
# prints the trial numbers of the visits it returns and the study's size.
WORKER = textwrap.dedent("""
    import json, sys
    import optuna
    from edgeprune.planner.search import Costs, Limits, optuna_search, _study_name
    from edgeprune.planner.space import Bucket, SearchSpace

    storage, trials, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    space = SearchSpace(tuple(Bucket(f"stage{i}", (f"l{i}",), 100) for i in range(3)), ("fp32", "int8"),
                        ("executorch",))
    limits = Limits(latency_ms=2.0)
    costs = lambda c: Costs(sum(c.keep) * (0.5 if c.scheme == "int8" else 1.0), 1.0, 1.0, 1.0)
    proxy = lambda c: 0.9 - 0.1 * sum(1.0 - k for k in c.keep)
    visits = optuna_search(space, costs, proxy, limits, trials=trials, seed=seed, storage=storage)
    study = optuna.load_study(study_name=_study_name(space, limits, 0.0), storage=storage)
    print(json.dumps({"steps": [v.step for v in visits], "study": len(study.trials),
                      "keeps": {v.step: list(v.candidate.keep) for v in visits}}))
""")


def _worker(storage: str, trials: int, seed: int = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, storage, str(trials), str(seed)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_processes_share_one_sqlite_study(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    # Concurrently: both workers write to one study without losing a trial.
    a, b = _worker(storage, 8, seed=0), _worker(storage, 8, seed=1)
    ra, rb = _result(a), _result(b)
    assert max(ra["study"], rb["study"]) == 16
    assert set(ra["steps"]) | set(rb["steps"]) == set(range(16))
    # Then a third worker joins the same study: its sampler and its returned visits include every earlier trial,
    # with the same parameters the others recorded, and its own trials are numbered after theirs.
    rc = _result(_worker(storage, 4, seed=0))
    assert rc["study"] == 20 and rc["steps"] == list(range(20))
    for r in (ra, rb):
        for step, keep in r["keeps"].items():
            assert rc["keeps"][step] == keep


@pytest.mark.parametrize("url", ["sqlite:////no/such/folder/search.db", "nosuchdb://host/db", "not a url"])
def test_storage_optuna_cannot_open_is_a_config_error(url: str):
    space = SearchSpace((Bucket("stage1", ("l1",), 1),), ("fp32",), ("executorch",))
    with pytest.raises(ConfigError, match=r"--storage '.*' cannot be opened") as info:
        optuna_search(space, lambda c: None, lambda c: 0.0, Limits(), trials=1, storage=url)
    assert url in str(info.value) and "\n" not in str(info.value)


def test_a_trial_another_worker_told_first_is_dropped_not_fatal(tmp_path: Path):
    """SQLite cannot lock a row, so two workers can pop one enqueued trial; the one that tells second must not
    crash, and must not count or keep that trial. Simulated by the 'other worker' telling it mid-objective."""
    import optuna

    from edgeprune.planner.search import Visit, _run_trial

    storage = f"sqlite:///{tmp_path / 'race.db'}"
    mine = optuna.create_study(directions=["maximize", "minimize"], storage=storage, study_name="race")
    other = optuna.load_study(study_name="race", storage=storage)
    mine.enqueue_trial({"x": 1.0})
    visits: list[Visit] = []

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 2.0)
        visits.append(Visit(None, None, x, trial.number))
        other.tell(trial.number, [x, 1.0])  # the other worker finishes the same trial first
        return x, 2.0

    assert _run_trial(mine, objective, visits) is False
    assert visits == []
    (t,) = mine.get_trials()
    assert t.state == optuna.trial.TrialState.COMPLETE and t.values == [1.0, 1.0]
    # an ordinary trial is told and kept
    assert _run_trial(mine, lambda tr: (tr.suggest_float("x", 0.0, 2.0), 3.0), visits) is True
    assert len(mine.get_trials()) == 2
