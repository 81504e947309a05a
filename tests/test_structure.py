"""Structure pruning of transformer encoders (edgeprune.structure): heads, MLP neurons and blocks really removed from
torchvision and timm ViTs and a transformers BERT, exactly (a pruned model computes what the dense one computes with
the removed units silenced), exported to every target and run on its real runtime."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.errors import ConfigError, UnsupportedModelError
from edgeprune.export import get_exporter
from edgeprune.runners.host import HostRunner
from edgeprune.structure import PrunedMultiheadAttention, describe, prune_depth, prune_heads, prune_mlp, prune_structure
from edgeprune.types import Plan

ARCHS = ("torchvision", "timm", "bert")
VOCAB = 50
SEQ = 12


def _spread(model: nn.Module) -> nn.Module:
    """Unit-scale weights in every Linear (torchvision zero-inits the classifier, timm and BERT draw std 0.02), so
    every head and neuron moves the logits and a wrong one shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, m.in_features**-0.5)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1)
    return model.eval()


def _build(arch: str) -> nn.Module:
    torch.manual_seed(0)
    if arch == "torchvision":
        from torchvision.models.vision_transformer import VisionTransformer

        model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                                  num_classes=5)  # fmt: skip
    elif arch == "timm":
        from timm.models.vision_transformer import VisionTransformer

        model = VisionTransformer(img_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=3, num_heads=4,
                                  mlp_ratio=2.0)  # fmt: skip
    else:
        from edgeprune.examples.text import build_model

        model = build_model({"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                             "intermediate_size": 64, "max_position_embeddings": SEQ, "type_vocab_size": 1,
                             "num_labels": 5, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                             "attn_implementation": "eager"})  # fmt: skip
    return _spread(model)


def _inputs(arch: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if arch == "bert":  # token ids as float32, as every edgeprune stage feeds them
        return torch.randint(0, VOCAB, (n, SEQ), generator=g).float()
    return torch.randn(n, 3, 32, 32, generator=g)


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {arch: _build(arch) for arch in ARCHS}


def _run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _gap(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest difference relative to the outputs' span (at least 1): float32 rounding, not a wrong unit, passes."""
    return (got - want).abs().max().item() / max(1.0, want.abs().max().item())


def _out_linear(model: nn.Module, name: str) -> nn.Linear:
    """The output projection of attention layer `name` (a name from the pruning summary) in the dense model."""
    m = model.get_submodule(name)
    if isinstance(m, (nn.MultiheadAttention, PrunedMultiheadAttention)):
        return m.out_proj
    return m.proj if hasattr(m, "proj") else m.output.dense


def _mlp_linears(model: nn.Module, name: str) -> tuple[nn.Linear, nn.Linear]:
    """(fc1, fc2) of MLP block `name` (a name from `describe`)."""
    m = model.get_submodule(name)
    if isinstance(m, nn.Sequential):  # torchvision MLPBlock
        first, second = [x for x in m if isinstance(x, nn.Linear)]
        return first, second
    if hasattr(m, "fc1"):  # timm Mlp
        return m.fc1, m.fc2
    return m.dense, model.get_submodule(name.rsplit(".", 1)[0]).output.dense  # BERT intermediate


def _heads_of(model: nn.Module, arch: str) -> list[tuple[int, tuple, tuple]]:
    """(head count attribute, q/k/v projection weight shapes, output projection weight shape) per attention layer."""
    found = []
    for m in model.modules():
        if arch == "torchvision" and isinstance(m, PrunedMultiheadAttention):
            found.append((m.num_heads, tuple(p.weight.shape for p in (m.q_proj, m.k_proj, m.v_proj)),
                          tuple(m.out_proj.weight.shape)))  # fmt: skip
        elif arch == "timm" and type(m).__name__ == "Attention":
            found.append((m.num_heads, (tuple(m.qkv.weight.shape),), tuple(m.proj.weight.shape)))
        elif arch == "bert" and type(m).__name__ == "BertAttention":
            s = m.self
            found.append((s.num_attention_heads, tuple(p.weight.shape for p in (s.query, s.key, s.value)),
                          tuple(m.output.dense.weight.shape)))  # fmt: skip
    return found


@pytest.mark.parametrize("arch", ARCHS)
def test_head_pruning_removes_whole_heads_and_the_model_still_runs(models, arch):
    dense = models[arch]
    x = _inputs(arch, 4, 1)
    pruned = prune_heads(dense, 0.5, x[:1])
    heads = _heads_of(pruned, arch)
    assert len(heads) == len(describe(dense)["heads"]) > 0
    for count, qkv, out in heads:  # 4 heads of 8 -> 2 heads of 8: 16 features in, the width (32) out
        assert count == 2
        assert qkv == (((3 * 16, 32),) if arch == "timm" else ((16, 32),) * 3)
        assert out == (32, 16)
    if arch == "torchvision":
        assert all(b.num_heads == 2 for b in pruned.encoder.layers)
        assert not any(isinstance(m, nn.MultiheadAttention) for m in pruned.modules())
    if arch == "bert":
        assert all(layer.attention.self.all_head_size == 16 for layer in pruned.model.bert.encoder.layer)
    assert set(describe(pruned)["heads"].values()) == {2}
    assert _run(pruned, x).shape == (4, 5)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in dense.parameters())
    assert set(describe(dense)["heads"].values()) == {4}  # the dense model is left as it was


@pytest.mark.parametrize("arch", ARCHS)
def test_a_head_pruned_model_computes_the_dense_model_with_those_heads_silenced(models, arch):
    dense = models[arch]
    x = _inputs(arch, 6, 2)
    pruned, summary = prune_structure(dense, x[:1], head_keep_ratio=0.5)
    silenced = copy.deepcopy(dense)
    with torch.no_grad():
        for name, rec in summary["heads"].items():
            assert rec["before"] == 4 and rec["after"] == len(rec["kept"]) == 2
            out = _out_linear(silenced, name)
            for h in set(range(4)) - set(rec["kept"]):
                out.weight[:, h * 8 : (h + 1) * 8] = 0.0
    got, want, full = _run(pruned, x), _run(silenced, x), _run(dense, x)
    assert _gap(got, want) <= 1e-5
    assert (got - full).abs().max().item() > 1e-3  # the removed heads did matter: the check above is not vacuous


@pytest.mark.parametrize("arch", ARCHS)
def test_mlp_pruning_shrinks_every_hidden_width_and_keeps_the_kept_neurons_exactly(models, arch):
    dense = models[arch]
    x = _inputs(arch, 6, 3)
    pruned, summary = prune_structure(dense, x[:1], mlp_keep_ratio=0.5)
    widths = describe(pruned)["mlp"]
    assert widths and set(widths.values()) == {32} and set(describe(dense)["mlp"].values()) == {64}
    assert {k: (v["before"], v["after"]) for k, v in summary["mlp"].items()} == {k: (64, 32) for k in widths}
    silenced = copy.deepcopy(dense)
    with torch.no_grad():
        for name in widths:
            fc1, fc2 = _mlp_linears(pruned, name)
            assert fc1.weight.shape == (32, 32) and fc2.weight.shape == (32, 32)
            dense_fc1, dense_fc2 = _mlp_linears(silenced, name)
            kept = [int((dense_fc1.weight == row).all(1).nonzero()[0]) for row in fc1.weight]
            assert kept == sorted(set(kept))  # distinct, in the dense order
            dense_fc2.weight[:, sorted(set(range(64)) - set(kept))] = 0.0
    got, want = _run(pruned, x), _run(silenced, x)
    assert _gap(got, want) <= 1e-5
    assert (got - _run(dense, x)).abs().max().item() > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_l2_keeps_the_heaviest_heads_and_neurons_and_is_deterministic(models, arch):
    model = copy.deepcopy(models[arch])
    name = next(iter(describe(model)["heads"]))
    mlp = next(iter(describe(model)["mlp"]))
    with torch.no_grad():
        out = _out_linear(model, name)
        out.weight[:, 3 * 8 : 4 * 8] *= 20.0  # head 3 of the first layer: by far the heaviest
        out.weight[:, 0:8] *= 10.0  # head 0: the second heaviest
        fc1, fc2 = _mlp_linears(model, mlp)
        fc1.weight[[5, 60]] *= 20.0
    x = _inputs(arch, 1, 4)
    first = prune_structure(model, x, head_keep_ratio=0.5, mlp_keep_ratio=0.25)[1]
    again = prune_structure(model, x, head_keep_ratio=0.5, mlp_keep_ratio=0.25)[1]
    assert first == again
    assert next(iter(first["heads"].values()))["kept"] == [0, 3]
    pruned = prune_mlp(model, 0.25, x)
    kept_rows = _mlp_linears(pruned, mlp)[0].weight
    assert any(torch.equal(row, fc1.weight[5]) for row in kept_rows)
    assert any(torch.equal(row, fc1.weight[60]) for row in kept_rows)


def test_activation_importance_drops_a_head_that_adds_nothing(models):
    """Head 1 of the first timm layer: the heaviest q/k rows (l2 keeps it) but zero values (it adds nothing)."""
    model = copy.deepcopy(models["timm"])
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.qkv.weight[8:16] *= 20.0  # q rows of head 1
        attn.qkv.weight[32 + 8 : 32 + 16] *= 20.0  # k rows of head 1
        attn.qkv.weight[64 + 8 : 64 + 16] = 0.0  # v rows of head 1
        attn.qkv.bias[64 + 8 : 64 + 16] = 0.0
    calib = _inputs("timm", 16, 5)
    by_l2 = prune_structure(model, calib[:1], head_keep_ratio=0.75)[1]["heads"]["blocks.0.attn"]["kept"]
    by_act = prune_structure(model, calib[:1], head_keep_ratio=0.75, calibration=calib,
                             importance="activation")[1]["heads"]["blocks.0.attn"]["kept"]  # fmt: skip
    assert 1 in by_l2 and 1 not in by_act and len(by_act) == 3
    with pytest.raises(ConfigError, match="activation"):
        prune_heads(model, 0.5, calib[:1], importance="activation")


@pytest.mark.parametrize("arch", ARCHS)
def test_depth_pruning_removes_whole_blocks(models, arch):
    dense = models[arch]
    x = _inputs(arch, 4, 6)
    n = next(iter(describe(dense)["blocks"].values()))
    pruned = prune_depth(dense, n - 1, x[:1])
    assert list(describe(pruned)["blocks"].values()) == [n - 1]
    assert _run(pruned, x).shape == (4, 5)
    if arch == "bert":
        assert pruned.model.config.num_hidden_layers == n - 1 and dense.model.config.num_hidden_layers == n
    if arch != "bert":  # pre-norm blocks: dropping one is exactly an identity in its place
        pruned = prune_depth(dense, [1], x[:1])
        skipped = copy.deepcopy(dense)
        stack = skipped.encoder.layers if arch == "torchvision" else skipped.blocks
        for i in range(len(stack)):
            if i != 1:
                stack[i] = nn.Identity()
        assert _gap(_run(pruned, x), _run(skipped, x)) <= 1e-5


def test_depth_keeps_the_blocks_that_change_the_stream_most_else_evenly_spaced(models):
    model = copy.deepcopy(models["timm"])  # 3 blocks
    with torch.no_grad():  # block 0 adds (almost) nothing to the residual stream
        for layer in (model.blocks[0].attn.proj, model.blocks[0].mlp.fc2):
            layer.weight.mul_(1e-4)
            layer.bias.zero_()
    calib = _inputs("timm", 8, 7)
    _, measured = prune_structure(model, calib[:1], keep_blocks=2, calibration=calib)
    _, even = prune_structure(model, calib[:1], keep_blocks=2)
    assert measured["blocks"]["blocks"] == {"before": 3, "after": 2, "kept": [1, 2], "chosen_by": "residual-change"}
    assert even["blocks"]["blocks"]["kept"] == [0, 2] and even["blocks"]["blocks"]["chosen_by"] == "even"


@pytest.mark.parametrize("arch", ARCHS)
def test_keep_ratio_one_leaves_the_outputs_unchanged(models, arch):
    dense = models[arch]
    x = _inputs(arch, 4, 8)
    n = next(iter(describe(dense)["blocks"].values()))
    for pruned in (prune_heads(dense, 1.0, x[:1]), prune_mlp(dense, 1.0, x[:1]), prune_depth(dense, n, x[:1])):
        assert _gap(_run(pruned, x), _run(dense, x)) <= 1e-5
    assert describe(prune_heads(dense, 1.0))["heads"] == describe(dense)["heads"]


class _Cnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


class WindowAttention(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_a_model_without_known_attention_gets_one_line_naming_it(models):
    x = torch.randn(1, 3, 8, 8)
    for fn, what in ((lambda m: prune_heads(m, 0.5, x), "head pruning"), (lambda m: prune_mlp(m, 0.5, x), "MLP"),
                     (lambda m: prune_depth(m, 1, x), "depth")):  # fmt: skip
        with pytest.raises(UnsupportedModelError) as info:
            fn(_Cnn())
        message = str(info.value)
        assert "\n" not in message and what in message and "_Cnn" in message and info.value.exit_code == 2
    odd = nn.Sequential(_Cnn(), WindowAttention())
    with pytest.raises(UnsupportedModelError, match=r"'1' \(WindowAttention\)"):
        prune_heads(odd, 0.5, x)


def test_bad_ratios_and_counts_are_config_errors(models):
    model = models["torchvision"]
    for ratio in (0.0, 1.5, -0.2):
        with pytest.raises(ConfigError, match="keep ratio"):
            prune_heads(model, ratio)
    with pytest.raises(ConfigError, match="importance 'fisher'"):
        prune_mlp(model, 0.5, importance="fisher")
    with pytest.raises(ConfigError, match="keep_blocks 3 is out of range"):
        prune_depth(model, 3)
    with pytest.raises(ConfigError, match="distinct indices"):
        prune_depth(model, [0, 0])
    assert set(describe(prune_heads(model, 0.01))["heads"].values()) == {1}  # at least one head stays


# ------------------------------------------------------------------------------------------ export, real runtimes


@pytest.fixture(scope="module")
def jointly_pruned(models) -> dict[str, tuple[nn.Module, dict]]:
    """Each architecture with half its heads, half its MLP width and one block fewer."""
    out = {}
    for arch, model in models.items():
        n = next(iter(describe(model)["blocks"].values()))
        out[arch] = prune_structure(model, _inputs(arch, 1, 9), head_keep_ratio=0.5, mlp_keep_ratio=0.5,
                                    keep_blocks=n - 1)  # fmt: skip
    return out


# The ViT and the text encoder on every target; timm's ViT (the same Linear surgery, fused-SDPA attention) on ONNX
# only, to keep this file within its CI time (it passes on ExecuTorch and LiteRT too, for about 15 s more).
EXPORTS = [(arch, target) for arch in ("torchvision", "bert") for target in ("executorch", "tflite", "onnx")]
EXPORTS.append(("timm", "onnx"))


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "target"), EXPORTS)
def test_a_jointly_pruned_encoder_exports_and_matches_itself_on_each_runtime(jointly_pruned, arch, target, tmp_path):
    model, summary = jointly_pruned[arch]
    assert summary["heads"] and summary["mlp"] and summary["blocks"]
    assert summary["params_after"] < summary["params_before"]
    exporter = get_exporter(target)
    example, inputs = _inputs(arch, 1, 10), _inputs(arch, 6, 11)
    result = exporter.export(model, example, inputs, Plan(target=target), tmp_path / f"m{exporter.suffix}")
    measured = HostRunner().measure(result.artifact, inputs.numpy(), warmup=1, runs=2, threads=1)
    want = _run(model, inputs).numpy()
    assert measured.outputs.shape == want.shape == (6, 5)
    span = float(np.abs(want).max())
    assert span > 0.1
    assert float(np.abs(measured.outputs - want).max()) <= 1e-4 * max(1.0, span)


@pytest.mark.slow
def test_the_text_example_learns_its_task_and_survives_head_pruning():
    from edgeprune.examples import text

    model = text.load_trained()
    data = text.text_split()
    dense_acc = text.accuracy(model, data.eval_x, data.eval_y)
    assert dense_acc >= 0.9, dense_acc
    ids = torch.from_numpy(data.eval_x[:1]).long()  # int64 ids work as well as float32 ones
    assert torch.equal(_run(model, ids), _run(model, ids.float()))
    pruned = prune_heads(model, 0.5, ids, calibration=torch.from_numpy(data.calib_x), importance="activation")
    assert set(describe(pruned)["heads"].values()) == {2}
    assert text.accuracy(pruned, data.eval_x, data.eval_y) >= 0.8  # half the heads gone, no fine-tune: most stays


@pytest.mark.slow
def test_a_fixed_plan_removes_heads_and_blocks_through_a_build_and_a_plan_yaml_carries_it(models, tmp_path):
    """--keep-heads / --keep-blocks through the API: the manifest records what was removed, the artifact is the
    pruned encoder (fewer parameters) matching its own PyTorch outputs, and a plan.yaml carries the structure for
    `apply` to replay."""
    import json

    import yaml

    import edgeprune
    from edgeprune.planner.recipe import make_recipe, read_plan_yaml, write_plan_yaml

    model = copy.deepcopy(models["torchvision"])
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(40, 3, 32, 32)).astype(np.float32), rng.integers(0, 5, size=40))
    plan = edgeprune.FixedPlan(keep_heads=0.5, keep_blocks=1, finetune_epochs=1)
    result = edgeprune.build(model, data, out=tmp_path / "dist", targets=["onnx"], plan=plan,
                             measure=edgeprune.Measure(runs=3, warmup=1), input_shape=(1, 3, 32, 32))
    manifest = json.loads((tmp_path / "dist" / "host" / "manifest.json").read_text())
    removed = manifest["pruning"]["structure"]
    assert removed["blocks"] and removed["heads"] and removed["params_after"] < removed["params_before"]
    assert all(h["after"] == h["before"] // 2 for h in removed["heads"].values())
    assert manifest["pruning"]["params_after"] < manifest["pruning"]["params_before"]
    assert result.devices["host"].artifact("onnx").quality.parity_passed
    built = result.devices["host"].plan
    assert (built.head_keep_ratio, built.keep_blocks) == (0.5, 1)
    recipe = make_recipe(model={}, device="host", plan=built, channels={}, recovery=None, predicted=None, measured=None)
    write_plan_yaml(tmp_path / "plan.yaml", recipe)
    assert yaml.safe_load((tmp_path / "plan.yaml").read_text())["plan"]["head_keep_ratio"] == 0.5
    replayed = read_plan_yaml(tmp_path / "plan.yaml").plan
    assert (replayed.head_keep_ratio, replayed.mlp_keep_ratio, replayed.keep_blocks) == (0.5, 1.0, 1)


def test_a_model_with_attention_is_recovered_at_the_attention_learning_rate():
    """2e-3 suits the CNNs and undoes what a transformer learnt (docs/benchmarks.md): a model with heads recovers at
    `ATTENTION_LR`, and the summary records it (what `apply` replays)."""
    from edgeprune.data import dataset_from_arrays
    from edgeprune.recover import ATTENTION_LR, RecoveryConfig, recover

    rng = np.random.default_rng(0)
    cases = [(_build("timm"), (3, 32, 32)), (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 4)), (3, 4, 4))]
    seen = []
    for model, shape in cases:
        data = dataset_from_arrays(rng.normal(size=(20, *shape)).astype(np.float32), rng.integers(0, 4, size=20),
                                   (1, *shape))
        summary = recover(copy.deepcopy(model), model.eval(), data, epochs=1, threads=1)
        seen.append(summary.config.lr)
    assert seen == [ATTENTION_LR, RecoveryConfig.lr] and ATTENTION_LR < RecoveryConfig.lr
