"""Cost-model features: kernels of a known small net (counts, MACs, types, fusion, delegation, int8 rules)."""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.cost.features import extract_features
from edgeprune.cost.fit import compact_kernels, features_from_compact, op_category, per_kernel_labels


class Known(nn.Module):
    """stem conv-bn-relu, inverted residual (pw-bn-relu6, dw-bn-relu6, pw-bn, add), hardswish, maxpool, channel
    shuffle, mean (no keepdim), linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(16, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(64, 64, 3, 1, 1, groups=64, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(64, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.hs = nn.Hardswish()
        self.pool = nn.MaxPool2d(2)
        self.gconv = nn.Conv2d(16, 32, 3, 1, 1, groups=4)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.dw(self.expand(x)))
        x = self.pool(self.hs(x))
        x = self.gconv(x)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.fc(x.mean((2, 3)))


def _features(target="executorch", scheme="fp32"):
    torch.manual_seed(0)
    return extract_features(Known().eval(), torch.randn(1, 3, 32, 32), target, scheme)


def test_kernel_types_counts_and_fusion():
    f = _features()
    types = [k.type for k in f.kernels]
    assert types == ["conv", "pwconv", "dwconv", "pwconv", "add", "act", "maxpool", "gconv", "copy", "gap", "linear"]
    by = {k.type: k for k in f.kernels}
    assert f.kernels[0].fused == ("bn", "relu")  # BatchNorm folded, ReLU fused as an output clamp
    assert f.kernels[1].fused == ("bn", "relu6") and f.kernels[2].fused == ("bn", "relu6")
    assert f.kernels[3].fused == ("bn",)
    assert by["act"].source == "hardswish"  # not a clamp: stays a kernel of its own
    assert by["dwconv"].groups == 64 and by["gconv"].groups == 4
    assert by["maxpool"].kernel_hw == (2, 2) and by["maxpool"].stride == 2


def test_macs_params_and_bytes():
    f = _features()
    k = {i: kk for i, kk in enumerate(f.kernels)}
    assert k[0].macs == 16 * 16 * 16 * 3 * 9  # 16x16 output, 16 channels, 3x3x3 window
    assert k[1].macs == 16 * 16 * 64 * 16
    assert k[2].macs == 16 * 16 * 64 * 9
    assert k[7].macs == 8 * 8 * 32 * (16 // 4) * 9
    assert k[10].macs == 32 * 10
    # params after folding BN: every conv gains a bias
    expected = (16 * 27 + 16) + (64 * 16 + 64) + (64 * 9 + 64) + (16 * 64 + 16) + (32 * 4 * 9 + 32) + (32 * 10 + 10)
    assert f.params == expected
    assert f.weight_bytes == 4 * expected
    assert f.input_bytes == 3 * 32 * 32 * 4 and f.output_bytes == 10 * 4
    assert k[0].out_bytes == 16 * 16 * 16 * 4
    assert f.macs == sum(k[i].macs for i in (0, 1, 2, 3, 7, 10))


def test_delegation_partitions_and_arena():
    et = _features("executorch")
    gap = next(k for k in et.kernels if k.type == "gap")
    assert not gap.delegated and et.non_delegated == ("mean",)  # mean without keepdim runs on portable kernels
    assert et.partitions == 2
    # the planned arena holds the graph I/O and the tensors crossing the delegate boundary
    assert et.planned_arena_bytes >= et.input_bytes + et.output_bytes + 32 * 8 * 8 * 4
    lite = _features("tflite")
    assert all(k.delegated for k in lite.kernels) and lite.partitions == 1
    assert lite.activation_peak_bytes >= 64 * 16 * 16 * 4  # the expanded tensor is live at some point


def test_int8_rules():
    f = _features(scheme="int8")
    conv = f.kernels[0]
    assert conv.dtype == "int8"
    assert conv.weight_bytes == 16 * 27 * 1 + 16 * 4 + 16 * 4  # int8 weights, int32 bias, fp32 per-channel scale
    assert conv.out_bytes == 16 * 16 * 16  # int8 activations
    assert f.input_bytes == 3 * 32 * 32 * 4  # the model's I/O stays float


def test_features_do_not_change_the_model():
    torch.manual_seed(0)
    m = Known().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    extract_features(m, torch.randn(1, 3, 32, 32))
    assert m.training and all(mod.training for mod in m.modules())
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics untouched


def test_compact_round_trip():
    f = _features(scheme="int8")
    g = features_from_compact(compact_kernels(f))
    assert [k.type for k in g.kernels] == [k.type for k in f.kernels]
    assert g.weight_bytes == f.weight_bytes and g.macs == f.macs and g.partitions == f.partitions


def test_etdump_alignment_labels_each_kernel():
    f = _features()
    ops = [
        ["Transpose (ND, X32)", 3.0], ["Convolution (NHWC, F32) IGEMM", 10.0], ["Fully Connected (NC, F32) GEMM", 8.0],
        ["Convolution (NHWC, F32) DWConv", 6.0], ["Fully Connected (NC, F32) GEMM", 7.0], ["Add (ND)", 1.0],
        ["HardSwish (NC)", 2.0], ["Max Pooling (NHWC, F32)", 1.5], ["Convolution (NHWC, F32) IGEMM", 9.0],
        ["Transpose (ND, X32)", 1.0], ["Static Reshape (NC)", 0.5], ["Transpose (ND, X32)", 2.0],
        ["DELEGATE_CALL", 55.0], ["native_call_mean.out", 4.0], ["OPERATOR_CALL", 4.5],
        ["Fully Connected (NC, F32) GEMM", 2.0], ["DELEGATE_CALL", 3.0], ["Method::execute", 65.0],
    ]
    labels, glue = per_kernel_labels(f, ops)
    assert labels == {0: 10.0, 1: 8.0, 2: 6.0, 3: 7.0, 4: 1.0, 5: 2.0, 6: 1.5, 7: 9.0, 8: 3.5, 9: 4.5, 10: 2.0}
    assert glue == 3.0  # the input layout transpose belongs to no kernel
    assert op_category("Convolution (NHWC, QC8) DWConv") == "dwconv"
    assert op_category("Invalid Unary Op") == "act"
