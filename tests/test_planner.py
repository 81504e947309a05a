"""The planner: search-space pieces on their own, then budget-driven builds of the digits example end to end
(real pruning, fine-tuning, ExecuTorch export and host measurement), plan.yaml replay and the bad-input cases."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

import numpy as np

from edgeprune.limits import Costs, Limits
from edgeprune.planner.correction import Correction
from edgeprune.planner.device_search import (measured_figures, no_faster_than_a_more_faithful_scheme,
                                             no_faster_with_more_threads)
from edgeprune.cli import main
from edgeprune.planner import Candidate, SearchSpace, make_buckets, pareto_front
from edgeprune.planner.search import greedy, is_uniform, uniform
from edgeprune.planner.sensitivity import Sensitivity
from edgeprune.planner.space import thread_options
from edgeprune.profiles import load_profile
from edgeprune.prune import channel_groups, prune
from edgeprune.types import ChannelGroup, Measurement


def _groups(macs: list[int]) -> list[ChannelGroup]:
    return [ChannelGroup(f"layer{i}", 32, m, i) for i, m in enumerate(macs)]


def test_buckets_are_contiguous_cover_every_group_and_balance_macs():
    groups = _groups([10, 10, 10, 10, 40, 10, 10, 50, 5, 5])
    buckets = make_buckets(groups, max_buckets=4)
    assert len(buckets) == 4
    roots = [r for b in buckets for r in b.roots]
    assert roots == [g.root for g in groups]  # in forward order, each once
    assert max(b.macs for b in buckets) <= 60
    assert make_buckets(_groups([5, 5]), max_buckets=6) and len(make_buckets(_groups([5, 5]))) == 2


def test_digits_groups_and_plan_round_trip_through_prune(digits_model):
    example = torch.zeros(1, 1, 8, 8)
    groups = channel_groups(digits_model, example)
    assert len(groups) >= 6 and all(g.channels > 0 for g in groups)
    space = SearchSpace(make_buckets(groups), ("int8",), ("executorch",))
    cand = Candidate(tuple(0.5 if i == 0 else 1.0 for i in range(len(space.buckets))), "int8", "executorch")
    plan = space.to_plan(cand)
    assert set(plan.layer_keep_ratios) == set(space.buckets[0].roots)
    _, summary = prune(digits_model, example, torch.zeros(0, 1, 8, 8), plan)
    changed = {name.rsplit(".", 1)[0] for name in summary.channels}
    assert summary.macs_after < summary.macs_before
    assert any(root.rsplit(".", 1)[0] in changed for root in space.buckets[0].roots)
    assert space.step_down(Candidate((0.25,) * len(space.buckets), "int8", "executorch"), 0) is None


def test_candidates_carry_criterion_and_threads_and_share_pruned_models_across_threads():
    assert thread_options(1) == (1,) and thread_options(4) == (1, 2, 4) and thread_options(6) == (1, 2, 4, 6)
    space = SearchSpace(make_buckets(_groups([100, 100]), max_buckets=2), ("fp32", "int8"), ("executorch",),
                        importances=("l2", "fpgm"), threads=(1, 2))
    assert len(space.starts()) == 2 * 2 * 2  # scheme x criterion x threads, one target
    cand = Candidate((0.5, 1.0), "int8", "executorch", "fpgm", 2)
    plan = space.to_plan(cand)
    assert plan.importance == "fpgm" and plan.threads == 2 and plan.scheme == "int8"
    down = space.step_down(cand, 1)
    assert down == Candidate((0.5, 0.875), "int8", "executorch", "fpgm", 2)
    # the pruned model (and its fine-tuned weights) depends on the keep ratios and the criterion only
    assert Candidate((0.5, 1.0), "fp32", "executorch", "fpgm", 1).prune_key == cand.prune_key
    assert Candidate((0.5, 1.0), "int8", "executorch", "l2", 2).prune_key != cand.prune_key
    assert space.dense("fp32", "executorch").threads == 2  # the unpruned model at the most threads by default


def test_power_at_fewer_threads_scales_the_dynamic_part_only():
    prof = load_profile("pixel-8")
    assert prof.active_power_w() == pytest.approx(prof.power.active_w)
    assert prof.active_power_w(prof.default_threads) == pytest.approx(prof.power.active_w)
    one = prof.active_power_w(1)
    dynamic = prof.power.active_w - prof.power.idle_w
    assert one == pytest.approx(prof.power.idle_w + dynamic / prof.default_threads)
    assert prof.power.idle_w < one < prof.power.active_w


def test_pareto_front_keeps_only_undominated_points():
    pts = [(0.9, 10.0), (0.95, 12.0), (0.85, 11.0), (0.99, 20.0), (0.9, 9.0)]
    front = pareto_front(pts, accuracy=lambda p: p[0], latency_ms=lambda p: p[1])
    assert front == [(0.9, 9.0), (0.95, 12.0), (0.99, 20.0)]


def test_correction_interpolates_between_measured_plans():
    c = Correction()
    pair = ("executorch", "int8")
    assert c.apply(pair, "latency", 2.0) == 2.0  # nothing measured: the prediction
    c.add(pair, "latency", 4.0, 2.0)
    assert c.apply(pair, "latency", 2.0) == pytest.approx(1.0)  # proportional to the one point
    c.add(pair, "latency", 1.0, 0.8)
    assert c.apply(pair, "latency", 2.5) == pytest.approx(1.4)  # linear between (1, 0.8) and (4, 2)
    # below the smallest plan: the line through the two smallest, (1, 0.8) and (4, 2), which keeps the fixed 0.4 ms the
    # prediction misses, not 0.5 * 0.8 proportionally
    assert c.apply(pair, "latency", 0.5) == pytest.approx(0.6)
    steep = Correction()  # where the line falls below proportional (the small plan ran relatively faster): proportional
    steep.add(pair, "latency", 4.0, 4.0)
    steep.add(pair, "latency", 2.0, 1.0)
    assert steep.apply(pair, "latency", 1.0) == pytest.approx(0.5)
    twice = Correction()  # one plan measured in two rounds: two points at one prediction, no line through them
    twice.add(pair, "latency", 2.0, 1.0)
    twice.add(pair, "latency", 2.0, 1.2)
    assert twice.apply(pair, "latency", 1.0) == pytest.approx(0.5)  # proportional to the first point
    assert c.apply(("onnx", "int8"), "latency", 3.0) == 3.0  # other pairs untouched
    noisy = Correction()  # a pruned plan (predicted 1) timed slower than the dense one (predicted 4): pooled
    noisy.add(pair, "latency", 4.0, 2.0)
    noisy.add(pair, "latency", 1.0, 3.0)
    assert noisy.apply(pair, "latency", 2.5) == pytest.approx(2.5)
    assert noisy.apply(pair, "latency", 1.0) <= noisy.apply(pair, "latency", 4.0)


def test_a_plan_is_judged_by_the_upper_end_of_its_latency_interval():
    def measured(extra, timing=None):
        return Measurement(0.2, 0.3, 0.21, 150, 10, 2, 1000, None, "file size", "host", "executorch.runtime", {},
                           np.zeros((1, 10), np.float32), extra, timing=timing or {})

    blocks = {"block_p50_ms": [0.2, 0.31, 0.19], "block_p90_ms": [0.3, 0.45, 0.28]}
    timing = {"p50_ci95_ms": [0.19, 0.3], "p90_ci95_ms": [0.28, 0.45], "multimodal": True,
              "modes": [{"center_ms": 0.2, "share": 0.7}, {"center_ms": 0.31, "share": 0.3}]}
    got = measured_figures(measured(blocks, timing), "p50")
    assert (got["latency_ms"], got["latency_point_ms"], got["latency_low_ms"]) == (0.3, 0.2, 0.19)
    assert got["latency_modes_ms"] == [0.2, 0.31] and got["model_size_mb"] == 0.001
    assert measured_figures(measured(blocks, timing), "p90")["latency_ms"] == 0.45
    # without a bootstrap interval: the slowest and fastest blocks; one block (--blocks 1): its own figures
    assert measured_figures(measured(blocks), "p50")["latency_ms"] == 0.31  # not the median, 0.2
    assert measured_figures(measured({}), "p50")["latency_ms"] == 0.2
    assert measured_figures(measured({}), "p90")["latency_ms"] == 0.3


def test_a_thread_count_no_faster_than_fewer_threads_is_left_out():
    anchored = {("executorch", "fp32", 1): 0.09, ("executorch", "fp32", 2): 0.13,  # the second thread only contends
                ("executorch", "int8", 1): 0.05, ("executorch", "int8", 2): 0.03, ("executorch", "int8", 4): 0.031,
                ("tflite", "int8", 2): 0.2}
    dropped = no_faster_with_more_threads(anchored)
    assert set(dropped) == {("executorch", "fp32", 2), ("executorch", "int8", 4)}
    assert "0.13 ms, no faster than 0.09 ms" in dropped[("executorch", "fp32", 2)]
    assert "0.031 ms, no faster than 0.03 ms" in dropped[("executorch", "int8", 4)]


def test_a_scheme_no_faster_than_a_more_faithful_one_is_left_out_unless_size_or_memory_needs_it():
    # mobilenet_v2 at 224x224 on an AVX2 host without VNNI: XNNPACK int8 is slower than fp32 (measured 10.45 vs
    # 9.11 ms at 1 thread, 5.73 vs 4.66 ms at 2)
    anchored = {("executorch", "fp32", 1): 9.11, ("executorch", "fp32", 2): 4.66, ("executorch", "int8", 1): 10.45,
                ("executorch", "int8", 2): 4.2, ("tflite", "fp32", 1): 3.0, ("tflite", "int8", 1): 3.0,
                ("onnx", "fp32", 1): 5.0, ("onnx", "int8", 1): 6.0}
    dropped = no_faster_than_a_more_faithful_scheme(anchored, lambda target, scheme, threads: target != "onnx")
    # int8 faster at 2 threads stays; a tie counts as no faster; where fp32 is over the size budget int8 stays
    assert set(dropped) == {("executorch", "int8", 1), ("tflite", "int8", 1)}
    assert "10.45 ms, no faster than fp32 at 9.11 ms" in dropped[("executorch", "int8", 1)]
    assert no_faster_than_a_more_faithful_scheme(anchored, lambda *key: False) == {}


def test_greedy_prunes_the_cheap_stage_first_and_stops_past_the_budget():
    space = SearchSpace(make_buckets(_groups([100, 100]), max_buckets=2), ("fp32",), ("executorch",))
    # stage 0 costs little accuracy per ms saved; stage 1 is sensitive
    sens = Sensitivity(1.0, (0.75, 0.5, 0.25), ((0.99, 0.98, 0.97), (0.8, 0.6, 0.4)))

    def costs(c: Candidate) -> Costs:
        latency = 5.0 * c.keep[0] + 5.0 * c.keep[1]
        return Costs(latency, latency, latency, latency)

    path = greedy(space, space.dense("fp32", "executorch"), costs, lambda c: sens.proxy_accuracy(c.keep),
                  Limits(latency_ms=7.0), extra_steps=1)
    keeps = [v.candidate.keep for v in path]
    assert keeps[0] == (1.0, 1.0)
    assert all(k[1] == 1.0 for k in keeps[:4])  # the insensitive stage goes first
    met = [v for v in path if v.costs.latency_ms <= 7.0]
    assert met and path[-1] is not met[0]  # one step past the first plan within budget (a fallback)



def test_uniform_walk_stops_at_the_densest_single_ratio_that_fits():
    space = SearchSpace(make_buckets(_groups([100, 100, 100]), max_buckets=3), ("int8",), ("executorch",))
    sens = Sensitivity(1.0, (0.75, 0.5, 0.25), ((0.99, 0.98, 0.97),) * 3)

    def costs(c: Candidate) -> Costs:
        latency = sum(c.keep)
        return Costs(latency, latency, latency, latency)

    path = uniform(space, space.dense("int8", "executorch"), costs, lambda c: sens.proxy_accuracy(c.keep),
                   Limits(latency_ms=2.0))
    keeps = [v.candidate.keep for v in path]
    assert keeps[0] == (1.0, 1.0, 1.0) and all(is_uniform(v.candidate) for v in path)
    assert keeps[-1] == pytest.approx((0.65, 0.65, 0.65))  # 3 x 0.65 = 1.95 <= 2.0; 0.7 would be 2.1
    assert [v.costs.latency_ms <= 2.0 for v in path] == [False] * (len(path) - 1) + [True]
    never = uniform(space, space.dense("int8", "executorch"), costs, lambda c: 1.0, Limits(latency_ms=0.1))
    assert never[-1].candidate.keep == (0.25, 0.25, 0.25)  # no ratio fits: the walk ends at the grid's sparsest
    assert not is_uniform(Candidate((1.0, 0.5), "int8", "executorch"))


# --------------------------------------------------------------------------------------------- end to end


def _json_run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


@pytest.fixture(scope="module")
def planned(tmp_path_factory, digits_model):
    """A budget-driven build on host, measured here (so the closed loop runs), against a size budget: a file size
    is the same on every run, so the outcome does not hang on this machine's timing noise. The latency goal of the
    issue (half the dense latency) is a timing result and is checked by bench/, not here."""
    out = tmp_path_factory.mktemp("planned") / "dist"
    budget = 0.12  # MB: the dense digits model is 1.2 MB in fp32 and 0.33 MB in int8, so it must prune
    code = main(["build", "--model", "examples:digits", "--device", "host", "--target", "executorch",
                 "--size-mb", str(budget), "--out", str(out), "--quiet", "--runs", "20", "--warmup", "5"])
    return code, out, budget


def test_budget_driven_build_meets_the_budget_with_a_measured_plan(planned):
    code, out, budget = planned
    assert code == 0
    summary = json.loads((out / "build.json").read_text())
    assert summary["mode"] == "planned for the budgets"
    planning = summary["devices"][0]["planning"]
    assert planning["pareto_front"], "the Pareto front is in build.json"
    assert 1 <= len(planning["rounds"]) <= 3
    assert any(r["met"] for r in planning["rounds"])
    # candidates are ranked on a brief fine-tune; only the chosen plan is fine-tuned in full (what apply replays)
    assert planning["finetuned"] and all(f["epochs"] == 3 for f in planning["finetuned"])
    # the densest uniform plan that fits (one keep ratio everywhere) is always ranked beside the searched ones
    assert any(len(set(f["keep"].values())) == 1 for f in planning["finetuned"]), planning["finetuned"]
    assert planning["final_finetune_s"] > 0 and summary["recovery"]["config"]["epochs"] == 10
    assert all(r["measured"]["model_size_mb"] is not None for r in planning["rounds"])
    manifest = json.loads((out / "host" / "manifest.json").read_text())
    art = manifest["artifacts"][0]
    checks = {c["name"]: c for c in art["verdict"]["checks"]}
    assert checks["model_size"]["status"] == "pass" and checks["model_size"]["value"] <= budget
    assert manifest["pruning"]["macs_after"] < manifest["pruning"]["macs_before"]
    drop = art["quality"]["accuracy_drop_pct"]
    assert drop is not None and drop <= 2.0  # host's accuracy budget
    assert (out / "host" / "plan.yaml").is_file()
    # threads and the importance criterion were searched; the build measured at the chosen thread count
    chosen = planning["chosen"]
    assert planning["searched"]["importance"] == ["l2", "fpgm"] and set(planning["sensitivity"]) == {"l2", "fpgm"}
    assert chosen["importance"] in ("l2", "fpgm") and chosen["threads"] in planning["searched"]["threads"]
    assert art["plan"]["threads"] == chosen["threads"] and art["plan"]["importance"] == chosen["importance"]
    assert art["measured"]["threads"] == chosen["threads"]
    recipe = yaml.safe_load((out / "host" / "plan.yaml").read_text())
    assert recipe["plan"]["threads"] == chosen["threads"] and recipe["plan"]["importance"] == chosen["importance"]


def test_apply_replays_the_plan_to_the_same_architecture(planned, tmp_path, capsys):
    _, out, _ = planned
    code, summary, err = _json_run(capsys, "apply", str(out / "host" / "plan.yaml"), "--model", "examples:digits",
                                   "--out", str(tmp_path / "dist"), "--runs", "5", "--warmup", "1", "--json")
    assert code in (0, 3), err
    original = json.loads((out / "host" / "manifest.json").read_text())
    replayed = json.loads((tmp_path / "dist" / "host" / "manifest.json").read_text())
    assert replayed["pruning"]["channels"] == original["pruning"]["channels"]
    assert replayed["pruning"]["params_after"] == original["pruning"]["params_after"]
    # same seed, data and settings: the same fine-tuned weights, so the same eval accuracy through the runtime
    assert replayed["artifacts"][0]["quality"]["artifact_accuracy"] == original["artifacts"][0]["quality"]["artifact_accuracy"]
    # one owner of prune + recovery: the replayed weights are the planner's, so the exported program is byte-identical
    assert replayed["artifacts"][0]["sha256"] == original["artifacts"][0]["sha256"]


def test_apply_refuses_a_plan_for_another_model(planned, tmp_path, capsys, user_models):
    _, out, _ = planned
    code, _, err = _json_run(capsys, "apply", str(out / "host" / "plan.yaml"), "--model", f"{user_models}:tiny",
                             "--out", str(tmp_path / "dist"), "--quiet")
    assert code == 2
    assert "module 'blocks." in err and err.count("\n") == 1
    assert not (tmp_path / "dist" / "host").exists()


def test_apply_refuses_a_newer_or_broken_plan(planned, tmp_path, capsys):
    _, out, _ = planned
    data = yaml.safe_load((out / "host" / "plan.yaml").read_text())
    data["schema_version"] = 99
    newer = tmp_path / "newer.yaml"
    newer.write_text(yaml.safe_dump(data))
    code, _, err = _json_run(capsys, "apply", str(newer), "--model", "examples:digits", "--out", str(tmp_path / "d"))
    assert code == 2 and "schema_version 99" in err and "upgrade edgeprune" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("schema_version: 1\nplan: [1, 2]\n")
    code, _, err = _json_run(capsys, "apply", str(broken), "--model", "examples:digits", "--out", str(tmp_path / "d"))
    assert code == 2 and "not an edgeprune plan.yaml" in err


def test_unreachable_budget_exits_3_naming_the_binding_budget(tmp_path, capsys, digits_model):
    # pixel-8 measured on host is not measured on the device: the plan stands on predictions alone (fast)
    one_criterion = ("--importance", "fpgm")  # the verdict's wording does not depend on how many are searched
    code, _, err = _json_run(capsys, "plan", "--model", "examples:digits", "--device", "pixel-8", "--target",
                             "executorch", "--latency-ms", "0.0001", "--out", str(tmp_path / "plans"), "--quiet",
                             *one_criterion)
    assert code == 3
    assert "best latency" in err and "> 0.0001 ms budget" in err and "closest plan" in err
    assert "predicted, not proven: measurements on host do not count for pixel-8" in err  # a laptop is not the phone
    assert "to widen the space" in err and err.count("\n") == 1
    assert not (tmp_path / "plans" / "pixel-8").exists()
    # a budget the best plan is predicted to meet, but by less than the planner's margin, says so
    best_ms = float(re.search(r"best latency ([0-9.e-]+) ms", err).group(1))
    code, _, err = _json_run(capsys, "plan", "--model", "examples:digits", "--device", "pixel-8", "--target",
                             "executorch", "--latency-ms", f"{best_ms * 1.02:.6g}", "--out", str(tmp_path / "plans"),
                             "--quiet", *one_criterion)
    assert code == 3
    assert "predicted, within the" in err and "but not its 5% prediction margin" in err, err


def test_plan_writes_plan_yaml_and_the_front_without_artifacts(tmp_path, capsys, digits_model):
    code, summary, err = _json_run(capsys, "plan", "--model", "examples:digits", "--device", "pixel-8",
                                   "--target", "executorch", "--size-mb", "0.1", "--out", str(tmp_path / "p"), "--json")
    assert code == 0, err
    planning = summary["devices"][0]["planning"]
    assert planning["chosen"]["predicted"]["model_size_mb"] <= 0.1
    assert planning["rounds"][0]["action"].startswith("not measured")
    assert (tmp_path / "p" / "pixel-8" / "plan.yaml").is_file()
    assert not list((tmp_path / "p").rglob("*.pte"))
    assert json.loads((tmp_path / "p" / "plan.json").read_text())["devices"][0]["device"] == "pixel-8"


def test_minimize_latency_needs_labelled_data_and_bad_strategy_is_refused(tmp_path, capsys, user_models):
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "--model", "examples:digits", "--strategy", "annealing", "--out", str(tmp_path / "p")])
    assert exit_info.value.code == 2 and "annealing" in capsys.readouterr().err
    code, _, err = _json_run(capsys, "plan", "--model", "examples:digits", "--schemes", "int4",
                             "--out", str(tmp_path / "p"))
    assert code == 2 and "int4" in err
    code, _, err = _json_run(capsys, "plan", "--model", f"{user_models}:tiny", "--minimize", "latency",
                             "--max-accuracy-drop", "1", "--out", str(tmp_path / "p"))
    assert code == 2 and "labelled eval data" in err


def test_thread_count_is_searched_against_the_latency_budget(tmp_path, capsys, digits_model):
    # predictions only (pixel-8 measured here does not count): the unpruned model fits a budget at 2 threads but not
    # at 1, so the planner keeps it unpruned and runs it on 2 threads; with a looser budget 1 thread is enough
    from edgeprune.cost.model import predict

    prof = load_profile("pixel-8")
    example = torch.zeros(1, 1, 8, 8)
    at = {n: predict(prof, digits_model, example, "executorch", "fp32", n).latency_p50_ms for n in (1, 2)}
    assert at[1] > at[2] * 1.3
    for budget, threads in ((at[2] / 0.95 * 1.05, 2), (at[1] / 0.95 * 1.05, 1)):
        code, summary, err = _json_run(capsys, "plan", "--model", "examples:digits", "--device", "pixel-8",
                                       "--target", "executorch", "--schemes", "fp32", "--latency-ms", f"{budget:.6f}",
                                       "--out", str(tmp_path / f"p{threads}"), "--json")
        assert code == 0, err
        chosen = summary["devices"][0]["planning"]["chosen"]
        assert chosen["threads"] == threads and all(k == 1.0 for k in chosen["keep"].values()), chosen
    code, _, err = _json_run(capsys, "plan", "--model", "examples:digits", "--threads", "0", "--out", str(tmp_path / "z"))
    assert code == 2 and "--threads 0" in err


def test_optuna_strategy_finds_a_plan_within_the_predicted_budget(tmp_path, capsys, digits_model):
    code, summary, err = _json_run(capsys, "plan", "--model", "examples:digits", "--device", "pixel-8", "--target",
                                   "executorch", "--strategy", "optuna", "--size-mb", "0.12", "--finetune-epochs", "2",
                                   "--out", str(tmp_path / "p"), "--json")
    assert code == 0, err
    chosen = summary["devices"][0]["planning"]["chosen"]
    assert chosen["predicted"]["model_size_mb"] <= 0.12 * 0.95
    assert any(k < 1.0 for k in chosen["keep"].values())
    assert chosen["threads"] == 1  # a size budget is met at any thread count: the fewest win
