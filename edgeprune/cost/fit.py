"""Fitting cost-model coefficients from a measurement table (see `table.py` for the record format).

Two stages per (target, scheme):

1. Kernel costs. Where per-operator timings exist (ExecuTorch ETDump rows), each kernel of each network gets its
   own label: the XNNPACK operators are aligned to the kernels in execution order (a dynamic-programming
   alignment on operator categories; operators a kernel expands into, such as SiLU's sigmoid + multiply or an int8
   float island's converts, are added to it). One non-negative least-squares fit per kernel key
   (us_per_call, us_per_mmac, us_per_mb, us_per_weight_mb) minimises the relative error; the GEMM and depthwise tiles used to pad
   shapes are chosen from a small grid by the same criterion. A target without per-operator timings (LiteRT)
   borrows the kernel costs of the same scheme on another XNNPACK target, else the anchored roofline.
2. Whole models. Per network, the stage-1 costs are summed per group (GEMM-like, depthwise, memory-bound); a
   second non-negative fit on the whole-model p50 latencies finds one multiplier per group (pulled towards 1 by a
   ridge prior, so that a handful of networks suffice) plus the per-inference overhead, the cost per MB of model
   I/O and per extra delegate partition. The final coefficients are the stage-1 ones times their group's multiplier.

Accuracy is estimated by k-fold cross-validation over networks (whole networks are held out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.optimize import nnls

from edgeprune.cost.features import Kernel, ModelFeatures, extract_features
from edgeprune.cost.model import GROUPS, group_of, kernel_cost, kernel_key, latency_us, model_terms
from edgeprune.profiles import (
    CostModel,
    FitQuality,
    KernelCoefficients,
    LatencyCoefficients,
    SizeCoefficients,
)

REL_FLOOR_US = 3.0
"""Labels below this are weighted as if they were this large (ETDump has 1 us resolution)."""
RIDGE = 0.3
"""Weight of the prior 'group multiplier = 1' against the whole-model rows (each row weighs ~1)."""
GEMM_TILES = [(m, n, k) for m in (1, 4, 7, 8) for n in (1, 8, 16, 32, 64) for k in (1, 2, 4, 8)]
DW_TILES = (1, 4, 8, 16, 32, 64)
MIN_ROWS_PER_KEY = 4


# ----------------------------------------------------------------------------------------------- features


def compact_kernels(f: ModelFeatures) -> dict[str, Any]:
    """A model's features as plain JSON (for feedback records): enough to refit without the model."""
    return {
        "target": f.target, "scheme": f.scheme, "input_bytes": f.input_bytes, "output_bytes": f.output_bytes,
        "params": f.params, "weight_bytes": f.weight_bytes, "activation_peak_bytes": f.activation_peak_bytes,
        "planned_arena_bytes": f.planned_arena_bytes, "partitions": f.partitions,
        "kernels": [[k.type, k.dtype, list(k.in_shape), list(k.out_shape), k.macs, k.weight_bytes, k.in_bytes,
                     k.out_bytes, k.kernel_hw[0], k.kernel_hw[1], k.stride, k.groups, int(k.delegated), k.source]
                    for k in f.kernels],
    }


def features_from_compact(d: dict[str, Any]) -> ModelFeatures:
    kernels = tuple(
        Kernel(index=i, type=r[0], dtype=r[1], in_shape=tuple(r[2]), out_shape=tuple(r[3]), macs=r[4],
               weight_bytes=r[5], in_bytes=r[6], out_bytes=r[7], kernel_hw=(r[8], r[9]), stride=r[10],
               groups=r[11], delegated=bool(r[12]), source=r[13])
        for i, r in enumerate(d["kernels"])
    )
    return ModelFeatures(
        target=d["target"], scheme=d["scheme"], kernels=kernels, input_bytes=d["input_bytes"],
        output_bytes=d["output_bytes"], params=d["params"], weight_bytes=d["weight_bytes"],
        activation_peak_bytes=d["activation_peak_bytes"], planned_arena_bytes=d["planned_arena_bytes"],
        partitions=d["partitions"],
    )


class FeatureCache:
    """Features of table records: suite networks are rebuilt from their spec (traced once per network)."""

    def __init__(self) -> None:
        self._nodes: dict[str, tuple[Any, tuple[int, ...]]] = {}
        self._feats: dict[tuple[str, str, str], ModelFeatures] = {}

    def get(self, rec: dict[str, Any]) -> ModelFeatures:
        if "features" in rec:
            return features_from_compact(rec["features"])
        key = (rec["network"], rec["target"], rec["scheme"])
        if key not in self._feats:
            from edgeprune.cost.features import lower, trace
            from edgeprune.cost.suite import build_network

            if rec["network"] not in self._nodes:
                model, x = build_network(rec["spec"], seed=int(rec.get("index", 0)))
                self._nodes[rec["network"]] = (trace(model, x), tuple(x.shape))
            nodes, shape = self._nodes[rec["network"]]
            self._feats[key] = lower(nodes, shape, rec["target"], rec["scheme"])
        return self._feats[key]


# ----------------------------------------------------------------------------------------------- alignment


def op_category(name: str) -> str:
    n = name.lower()
    if n.startswith("convolution"):
        return "dwconv" if "dwconv" in n else "conv"
    if n.startswith("fully connected") or n.startswith("batch matrix"):
        return "fc"
    if n.startswith(("add", "subtract")):
        return "add"
    if n.startswith(("multiply", "divide")):
        return "mul"
    if "pooling" in n:
        if n.startswith("max"):
            return "maxpool"
        return "gap" if "global" in n else "avgpool"
    if n.startswith(("mean", "sum", "reduce")):
        return "gap"
    if n.startswith(("hardswish", "sigmoid", "tanh", "elu", "leaky", "gelu", "invalid unary", "clamp", "relu",
                     "swish", "unary", "negate", "square", "abs", "exp", "log")):
        return "act"
    if n.startswith("concatenate"):
        return "concat"
    if n.startswith(("copy", "transpose", "slice", "constant pad", "static reshape", "even split", "static resize",
                     "depth to space", "space to depth", "static constant pad", "static slice")):
        return "copy"
    if n.startswith("convert"):
        return "convert"
    return "other"


_COMPAT = {
    "conv": {"conv"}, "gconv": {"conv"}, "pwconv": {"fc", "conv"}, "linear": {"fc"}, "dwconv": {"dwconv", "conv"},
    "add": {"add"}, "mul": {"mul"}, "act": {"act"}, "maxpool": {"maxpool"}, "avgpool": {"avgpool", "gap"},
    "gap": {"gap"}, "concat": {"concat", "copy"}, "copy": {"copy"}, "other": {"other", "act", "copy"},
}


def per_kernel_labels(f: ModelFeatures, ops: list[list[Any]]) -> tuple[dict[int, float], float]:
    """({kernel index: measured us}, glue us outside any kernel) from ETDump rows aligned to the kernels."""
    seq: list[tuple[str, float]] = []
    for i, (name, us) in enumerate(ops):
        if name in ("DELEGATE_CALL", "Method::execute", "OPERATOR_CALL"):
            continue
        if name.startswith("native_call_"):
            nxt = ops[i + 1] if i + 1 < len(ops) else None
            seq.append(("portable", float(nxt[1]) if nxt and nxt[0] == "OPERATOR_CALL" else float(us)))
            continue
        seq.append((op_category(name), float(us)))
    ks = f.kernels
    n, m = len(ks), len(seq)

    def ok(i: int, j: int) -> bool:
        k, cat = ks[i], seq[j][0]
        if not k.delegated:
            return cat == "portable"
        return cat in _COMPAT.get(k.type, {"other"})

    score = np.zeros((n + 1, m + 1))
    for i in range(1, n + 1):
        score[i, 0] = score[i - 1, 0] - 0.5
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            best = max(score[i, j - 1], score[i - 1, j] - 0.5)
            if ok(i - 1, j - 1):
                best = max(best, score[i - 1, j - 1] + 2.0)
            score[i, j] = best
    match: dict[int, int] = {}
    i, j = n, m
    while i > 0 and j > 0:
        if score[i, j] == score[i, j - 1]:  # prefer the earliest operator for each kernel
            j -= 1
        elif ok(i - 1, j - 1) and score[i, j] == score[i - 1, j - 1] + 2.0:
            match[j - 1] = i - 1
            i, j = i - 1, j - 1
        else:
            i -= 1
    labels: dict[int, float] = {}
    glue = 0.0
    matched_js = sorted(match)
    if not matched_js:
        return {}, sum(t for _, t in seq)
    first, last = matched_js[0], matched_js[-1]
    owner = None
    for j, (cat, us) in enumerate(seq):
        if j in match:
            owner = match[j]
            labels[owner] = labels.get(owner, 0.0) + us
        elif j < first or j > last:
            glue += us
        else:
            nxt = next((match[x] for x in matched_js if x > j), None)
            if cat == "convert" and nxt is not None and ks[nxt].dtype == "float32" and f.scheme == "int8":
                labels[nxt] = labels.get(nxt, 0.0) + us
            elif owner is not None:
                labels[owner] = labels.get(owner, 0.0) + us
    return labels, glue


# ----------------------------------------------------------------------------------------------- stage 1


@dataclass
class _KernelRow:
    network: str
    key: str
    kernel: Kernel
    label_us: float


def _weighted_nnls(x: np.ndarray, y: np.ndarray, floor: float = REL_FLOOR_US) -> np.ndarray:
    w = 1.0 / np.maximum(y, floor)
    coef, _ = nnls(x * w[:, None], y * w)
    return coef


def _fit_one(rows: list[_KernelRow], key: str, tiles: tuple[int, int, int]) -> tuple[np.ndarray, float]:
    """[us_per_call, us_per_mmac, us_per_mb, us_per_weight_mb] of one key and its weighted squared relative error."""
    from edgeprune.cost.model import kernel_work

    arr = np.asarray([(*kernel_work(r.kernel, tiles), r.label_us) for r in rows])
    x = np.column_stack([np.ones(len(arr)), arr[:, 0], arr[:, 1], arr[:, 2]])
    y = arr[:, 3]
    if len(arr) < MIN_ROWS_PER_KEY:
        # Too few rows for four coefficients: one rate on the dominant term plus a small call cost.
        col = 1 if group_of(key) in ("gemm", "dw") or key.startswith(("maxpool", "avgpool", "gap")) else 2
        c = np.zeros(4)
        c[0] = float(np.median(y)) * 0.1
        wts = 1.0 / np.maximum(y, REL_FLOOR_US) ** 2
        denom = float(np.sum(x[:, col] ** 2 * wts))
        if denom > 0:
            c[col] = max(0.0, float(np.sum(x[:, col] * (y - c[0]) * wts)) / denom)
    else:
        c = _weighted_nnls(x, y)
    err = float(np.sum(((x @ c - y) / np.maximum(y, REL_FLOOR_US)) ** 2))
    return c, err


def fit_kernels(rows: list[_KernelRow]) -> dict[str, tuple[np.ndarray, tuple[int, int, int]]]:
    """Stage 1: per kernel key, coefficients and the microkernel tiles (grid search, same relative criterion)."""
    by_key: dict[str, list[_KernelRow]] = {}
    for r in rows:
        by_key.setdefault(r.key, []).append(r)
    out: dict[str, tuple[np.ndarray, tuple[int, int, int]]] = {}
    for key, rs in by_key.items():
        group = group_of(key)
        grid = GEMM_TILES if group == "gemm" else [(1, c, 1) for c in DW_TILES] if group == "dw" else [(1, 1, 1)]
        if len(rs) < 2 * MIN_ROWS_PER_KEY:
            grid = [(1, 1, 1)]
        best = None
        for tiles in grid:
            c, err = _fit_one(rs, key, tiles)
            if best is None or err < best[2] - 1e-9:
                best = (c, tiles, err)
        out[key] = (best[0], best[1])
    return out


# ----------------------------------------------------------------------------------------------- stage 2


def _coeffs(kernel_coefs: dict[str, tuple[np.ndarray, tuple[int, int, int]]], target: str, scheme: str,
            threads: int, status: str, overhead: np.ndarray | None = None,
            multipliers: dict[str, float] | None = None) -> LatencyCoefficients:
    mult = multipliers or {}
    kernels = {}
    for k, (c, tiles) in sorted(kernel_coefs.items()):
        m = mult.get(k, mult.get(group_of(k), 1.0))
        kernels[k] = KernelCoefficients(us_per_call=float(c[0]) * m, us_per_mmac=float(c[1]) * m,
                                        us_per_mb=float(c[2]) * m, us_per_weight_mb=float(c[3]) * m,
                                        tile_m=int(tiles[0]), tile_n=int(tiles[1]), tile_k=int(tiles[2]))
    o = overhead if overhead is not None else np.zeros(4)
    if len(o) > 3 and o[3] > 0:  # dispatch cost per kernel, spread over every kernel type's call cost
        kernels = {k: v.model_copy(update={"us_per_call": v.us_per_call + float(o[3])}) for k, v in kernels.items()}
    return LatencyCoefficients(
        target=target, scheme=scheme, threads=threads, status=status,  # type: ignore[arg-type]
        overhead_us=float(o[0]), us_per_io_mb=float(o[1]), us_per_partition=float(o[2]), kernels=kernels,
    )


def _as_arrays(c: LatencyCoefficients) -> dict[str, tuple[np.ndarray, tuple[int, int, int]]]:
    return {k: (np.array([v.us_per_call, v.us_per_mmac, v.us_per_mb, v.us_per_weight_mb]), (v.tile_m, v.tile_n, v.tile_k))
            for k, v in c.kernels.items()}


def fit_whole(models: list[tuple[ModelFeatures, float]], base: LatencyCoefficients,
              free_keys: Iterable[str] = (), ridge: float | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Stage 2: multipliers of the stage-1 costs and model terms, from whole-model latencies (us).

    Columns: the stage-1 cost of each group (GEMM-like, depthwise, memory-bound), of each `free_keys` kernel key on
    its own (keys whose stage-1 cost is only a placeholder: no per-operator timing of them on any runtime), then 1
    (per-inference overhead), model I/O MB, extra delegate partitions and the number of kernels (the runtime's
    dispatch between operators, which per-operator timers do not see). Each group multiplier has a ridge prior
    towards 1; a free key's prior is scaled by its share of the models' latency, so a small kernel that this
    runtime runs far slower than the placeholder says can move far. Returns ({group or key: multiplier},
    [overhead_us, us_per_io_mb, us_per_partition, us_per_kernel])."""
    from edgeprune.cost.model import coefficients_for

    ridge = RIDGE if ridge is None else ridge
    free = sorted(set(free_keys))
    groups = [*GROUPS, "mem"]
    names = groups + free
    xs, ys = [], []
    for f, y in models:
        sums = dict.fromkeys(names, 0.0)
        for k in f.kernels:
            key, kc = coefficients_for(base, k, f.scheme)
            sums[key if key in free else group_of(key)] += kernel_cost(kc, k)
        t = model_terms(f)
        xs.append([sums[n] for n in names] + [1.0, t["io_mb"], t["extra_partitions"], float(len(f.kernels))])
        ys.append(y)
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    w = 1.0 / np.maximum(y, 1.0)
    xw, yw = x * w[:, None], y * w
    present = [i for i in range(len(names)) if np.any(x[:, i] > 0)]
    prior_x = np.zeros((len(names), x.shape[1]))
    prior_y = np.zeros(len(names))
    for i, name in enumerate(names):
        lam = math.sqrt(ridge)
        if name in free:
            lam *= max(float(np.mean(xw[:, i])), 1e-3) if i in present else 1.0
        prior_x[i, i] = lam
        prior_y[i] = lam if i in present else 0.0
    coef, _ = nnls(np.vstack([xw, prior_x]), np.concatenate([yw, prior_y]))
    mult = {g: float(coef[i]) if i in present else 1.0 for i, g in enumerate(names)}
    return mult, coef[len(names):]


def target_ms(rec: dict[str, Any]) -> float:
    """The latency a record is fitted on: `latency_ms` (fast-percentile estimate of calibration timings) when
    present, else the measured p50 (feedback from builds)."""
    v = rec.get("latency_ms")
    return float(v if v is not None else rec["latency_p50_ms"])


CONSISTENT = (0.85, 1.25)
"""A network's per-operator profile is used for the kernel fit only if (whole-model latency / sum of its operator
times) lies within this band around the median of that ratio: a profile taken while the machine was busy inflates
long operators (they span many scheduler time slices), and is then discarded (the whole-model latency still
counts in stage 2)."""


def _kernel_rows(records: list[dict[str, Any]], cache: FeatureCache) -> list[_KernelRow]:
    from edgeprune.cost.model import kernel_key

    labelled = []
    for rec in records:
        if not rec.get("ops"):
            continue
        f = cache.get(rec)
        labels, glue = per_kernel_labels(f, rec["ops"])
        total = sum(labels.values()) + glue
        if total > 0 and labels:
            labelled.append((rec, f, labels, target_ms(rec) * 1e3 / total))
    if not labelled:
        return []
    med = float(np.median([ratio for *_, ratio in labelled]))
    rows = []
    for rec, f, labels, ratio in labelled:
        if not CONSISTENT[0] * med <= ratio <= CONSISTENT[1] * med:
            continue
        for i, us in labels.items():
            k = f.kernels[i]
            rows.append(_KernelRow(rec["network"], kernel_key(k, f.scheme), k, us))
    return rows


def fit_pair(records: list[dict[str, Any]], all_records: list[dict[str, Any]], target: str, scheme: str,
             threads: int, cache: FeatureCache, fallback: LatencyCoefficients) -> LatencyCoefficients:
    """Coefficients for one (target, scheme) from its records (whole-model) and any per-op records."""
    own_ops = [r for r in records if r.get("ops")]
    donor_ops = [r for r in all_records if r.get("ops") and r["scheme"] == scheme and r["target"] != target]
    if own_ops:
        base = _coeffs(fit_kernels(_kernel_rows(own_ops, cache)), target, scheme, threads, "calibrated")
    elif donor_ops:
        base = _coeffs(fit_kernels(_kernel_rows(donor_ops, cache)), target, scheme, threads, "calibrated")
    else:
        base = fallback
    # keys no per-operator fit saw start from the fallback's costs, and stage 2 fits them on their own
    from edgeprune.cost.model import _fallback_kernel

    models = [(cache.get(r), target_ms(r) * 1e3) for r in records]
    seen = {kernel_key(k, f.scheme) for f, _ in models for k in f.kernels}
    measured = set(base.kernels) if base is not fallback else set()
    kernels = {**fallback.kernels, **base.kernels}
    for key in seen - set(kernels):
        kernels[key] = _fallback_kernel(base, key)
    base = base.model_copy(update={"kernels": kernels})
    if not models:
        return base
    mult, over = fit_whole(models, base, free_keys=(seen - measured) if measured else ())
    return _coeffs(_as_arrays(base), target, scheme, threads, "calibrated", over, mult)


def _errors(pred: Sequence[float], meas: Sequence[float]) -> np.ndarray:
    p, m = np.asarray(pred, float), np.asarray(meas, float)
    return 100.0 * (p - m) / m


def summarize(pred: Sequence[float], meas: Sequence[float]) -> dict[str, float]:
    """Share within +/-10% and +/-20%, median absolute % error, Spearman rank correlation."""
    e = np.abs(_errors(pred, meas))
    out = {
        "n": int(len(e)),
        "within_10_pct": float(np.mean(e <= 10.0)) if len(e) else float("nan"),
        "within_20_pct": float(np.mean(e <= 20.0)) if len(e) else float("nan"),
        "median_abs_error_pct": float(np.median(e)) if len(e) else float("nan"),
    }
    if len(e) >= 3:
        from scipy.stats import spearmanr

        out["rank_correlation"] = float(spearmanr(pred, meas).statistic)
    return out


def cross_validate(records: list[dict[str, Any]], all_records: list[dict[str, Any]], target: str, scheme: str,
                   threads: int, cache: FeatureCache, fallback: LatencyCoefficients, folds: int = 5
                   ) -> tuple[list[float], list[float]]:
    """Predictions and measurements of each network when its fold is held out (whole networks held out)."""
    nets = sorted({r["network"] for r in records})
    if len(nets) < 2:
        return [], []
    k = min(folds, len(nets))
    preds, meas = [], []
    for i in range(k):
        test = set(nets[i::k])
        train = [r for r in records if r["network"] not in test]
        train_all = [r for r in all_records if r["network"] not in test]
        c = fit_pair(train, train_all, target, scheme, threads, cache, fallback)
        for r in records:
            if r["network"] in test:
                preds.append(latency_us(cache.get(r), c) / 1e3)
                meas.append(target_ms(r))
    return preds, meas


def fit_size(records: list[dict[str, Any]], target: str, scheme: str, cache: FeatureCache) -> SizeCoefficients | None:
    """size = weight_factor * stored weight bytes + bytes_per_kernel * kernels + bytes_fixed (relative NNLS)."""
    from edgeprune.cost.model import stored_weight_bytes

    rows = [(cache.get(r), r["size_bytes"]) for r in records if r.get("size_bytes")]
    if len(rows) < 3:
        return None
    x = np.asarray([[stored_weight_bytes(f), len(f.kernels), 1.0] for f, _ in rows])
    y = np.asarray([s for _, s in rows], float)
    c = _weighted_nnls(x, y, floor=1.0)
    if c[0] <= 0:
        return None
    return SizeCoefficients(target=target, scheme=scheme, weight_factor=float(c[0]), bytes_per_kernel=float(c[1]),
                            bytes_fixed=float(c[2]))


def fit_macs_baseline(records: list[dict[str, Any]], cache: FeatureCache) -> tuple[float, float]:
    """The MACs-proportional baseline fitted on the same data: latency_ms = a * GMACs + b (relative NNLS)."""
    x = np.asarray([[cache.get(r).macs / 1e9, 1.0] for r in records])
    y = np.asarray([target_ms(r) for r in records])
    c = _weighted_nnls(x, y, floor=1e-3)
    return float(c[0]), float(c[1])


def fit_profile_cost_model(
    records: Iterable[dict[str, Any]],
    targets: Sequence[str],
    schemes: Sequence[str],
    threads: int,
    provenance: dict[str, Any],
    host_profile=None,
) -> CostModel:
    """A calibrated CostModel from table records (suite + feedback) for every (target, scheme) measured."""
    from edgeprune.cost.estimate import roofline
    from edgeprune.profiles import host_profile as _host

    prof = host_profile or _host()
    records = [r for r in records if r.get("kind") in ("suite", "feedback") and r.get("threads") == threads]
    cache = FeatureCache()
    latency, sizes = [], []
    cv_all_p, cv_all_m = [], []
    for t in targets:
        for s in schemes:
            mine = [r for r in records if r["target"] == t and r["scheme"] == s]
            if not mine:
                continue
            fallback = roofline(prof.cpu_clusters, prof.abi, t, s, threads, 1.0, status="calibrated")
            c = fit_pair(mine, records, t, s, threads, cache, fallback)
            p, m = cross_validate(mine, records, t, s, threads, cache, fallback)
            if p:
                q = summarize(p, m)
                cv_all_p += p
                cv_all_m += m
                c = c.model_copy(update={"fit": FitQuality(
                    method=f"{min(5, len({r['network'] for r in mine}))}-fold cross-validation over suite networks "
                           "(whole networks held out)",
                    models=q["n"], within_10_pct=round(q["within_10_pct"], 4), within_20_pct=round(q["within_20_pct"], 4),
                    median_abs_error_pct=round(q["median_abs_error_pct"], 2))})
            latency.append(c)
            sz = fit_size(mine, t, s, cache)
            if sz is not None:
                sizes.append(sz)
    expected = round(summarize(cv_all_p, cv_all_m)["median_abs_error_pct"], 2) if cv_all_p else None
    return CostModel(
        status="calibrated",
        method=(
            "per-kernel NNLS on ExecuTorch ETDump per-operator timings of the calibration suite, then per-group "
            "multipliers and overhead fitted on whole-model p50 latencies (edgeprune.cost.fit)"
        ),
        date=provenance["date"],
        runner=provenance["runner"],
        runtime_versions=provenance["runtime_versions"],
        threads=threads,
        expected_error_pct=expected,
        noise_spread_pct=provenance.get("noise_spread_pct"),
        table=provenance.get("table"),
        table_sha256=provenance.get("table_sha256"),
        calibration_s=provenance.get("calibration_s"),
        networks=provenance.get("networks"),
        feedback_records=provenance.get("feedback_records"),
        latency=tuple(latency),
        size=tuple(sizes),
    )


__all__ = [
    "FeatureCache", "compact_kernels", "cross_validate", "features_from_compact", "fit_macs_baseline", "fit_pair",
    "fit_profile_cost_model", "fit_size", "per_kernel_labels", "summarize", "extract_features",
]
