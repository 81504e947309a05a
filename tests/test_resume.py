"""Resume: a planned build journals its search beside the output folder; killed with SIGKILL mid-search, the same
command with --resume continues from the journal and gives the plan an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.errors import ConfigError
from edgeprune.planner.journal import Journal
from edgeprune.types import Measurement

# pixel-8 planned on this machine stands on predictions (a laptop's timings do not count for the phone), so two runs
# of one search are identical and a resumed plan can be compared with an uninterrupted one exactly
PLAN = ["plan", "--model", "examples:digits", "--device", "pixel-8", "--target", "executorch", "--size-mb", "0.1",
        "--schemes", "fp32,int8", "--importance", "fpgm", "--rank-epochs", "1", "--finetune-epochs", "2",
        "--executor", "serial", "--quiet"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeprune.cli", *args]


def _entries(journal: Path, kind: str) -> int:
    return len(list(journal.glob(f"{kind}-*.json")))


def test_journal_round_trips_and_refuses_other_inputs(tmp_path):
    folder = tmp_path / "dist.journal"
    journal = Journal(folder, "abc", resume=False)
    m = Measurement(0.5, 0.6, 0.55, 20, 5, 2, 1234, 3.5, "rss", "host", "executorch", {"executorch": "1.5"},
                    np.zeros((2, 3), np.float32), extra={"block_p50_ms": [np.float64(0.5), 0.52]},
                    timing={"p50_ci95_ms": (0.49, 0.52), "multimodal": False})
    journal.put("measured", [{"target": "executorch"}, "dense", "host"], m.to_dict())
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    journal.put_weights("tuned", [[0.5, 1.0], "l2", 3], state, {"accuracy": 0.9})
    (folder / "measured-torn.json.tmp").write_text('{"kind": "mea')  # a write cut by a crash: never read

    again = Journal(folder, "abc", resume=True)
    assert again.resumed and again.entries() == 2
    back = Measurement.from_dict(again.get("measured", [{"target": "executorch"}, "dense", "host"]))
    assert back.latency_p50_ms == 0.5 and back.size_bytes == 1234 and back.extra["block_p50_ms"] == [0.5, 0.52]
    weights, facts = again.get_weights("tuned", [[0.5, 1.0], "l2", 3])
    assert torch.equal(weights["w"], state["w"]) and facts == {"accuracy": 0.9}
    assert again.get("tuned", [[0.5, 1.0], "l2", 10]) is None
    assert again.reused == 2

    with pytest.raises(ConfigError, match="written for other inputs"):
        Journal(folder, "other", resume=True)
    fresh = Journal(folder, "other", resume=False)  # without --resume a new search starts afresh
    assert not fresh.resumed and fresh.entries() == 0


@pytest.mark.slow
def test_a_search_killed_with_sigkill_resumes_from_its_journal(tmp_path, digits_model):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    journal = Path(f"{killed}.journal")
    proc = subprocess.Popen(_cli(*PLAN, "--out", str(killed)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while _entries(journal, "tuned") < 1:  # mid-search: sensitivity done, a candidate fine-tuned, more to come
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the search journalled no fine-tuned candidate in 300 s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    recorded = len(list(journal.glob("*-*.json")))
    assert recorded >= 2 and _entries(journal, "sensitivity") >= 2
    assert not (killed / "pixel-8" / "plan.yaml").exists()

    resumed = subprocess.run(_cli(*PLAN, "--out", str(killed), "--resume", "--json"), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    # every evaluation recorded before the kill was read back, none computed again
    assert summary["journal"]["resumed"] is True and summary["journal"]["reused"] == recorded, summary["journal"]
    assert not journal.exists()  # the build is whole: the journal is gone

    uninterrupted = subprocess.run(_cli(*PLAN, "--out", str(whole)), capture_output=True, text=True, timeout=600)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    resumed_plan = (killed / "pixel-8" / "plan.yaml").read_text()
    assert resumed_plan == (whole / "pixel-8" / "plan.yaml").read_text()

    # a journal written for other inputs is not resumed: one line naming it, exit 2, the journal left as it was
    stale = tmp_path / "stale"
    Journal(Path(f"{stale}.journal"), "other inputs", resume=False)
    refused = subprocess.run(_cli(*PLAN, "--out", str(stale), "--resume"), capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "written for other inputs" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0
    assert json.loads(Path(f"{stale}.journal", "inputs.json").read_text())["fingerprint"] == "other inputs"
