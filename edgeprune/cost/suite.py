"""The calibration suite (`calibration/suite.yaml`): deterministic mobile-style networks to time.

`network_spec(suite, i)` draws network i from the suite's distributions with its own seed, so the i-th network is
the same on every machine; `build_network(spec)` turns a spec (plain JSON) into a PyTorch module.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

import torch
import yaml
from torch import nn

from edgeprune._resources import data_dir
from edgeprune.errors import ConfigError

SUITE_FILE = "suite.yaml"


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


def load_suite(path: str | None = None) -> dict[str, Any]:
    """The suite definition (the shipped `calibration/suite.yaml` unless `path` is given)."""
    p = path or str(data_dir("calibration") / SUITE_FILE)
    try:
        return _load(p)
    except OSError as exc:
        raise ConfigError(f"calibration suite '{p}' cannot be read: {exc.strerror}") from None


def _round(c: float, r: int) -> int:
    return max(r, int(round(c / r)) * r)


def network_spec(suite: dict[str, Any], i: int) -> dict[str, Any]:
    """Network `i` of the suite: {'name', 'input': [1, C, H, W], 'layers': [block specs]}."""
    rng = random.Random(suite["seed"] * 1_000_003 + i)
    size = rng.choice(suite["input_sizes"])
    cin = rng.choice(suite["input_channels"])
    st = suite["stem"]
    c = rng.choice(st["channels"])
    stride = (2 if size >= 96 else rng.choice(st["stride"])) if size > 48 else 1
    acts = suite["activations"]
    layers: list[dict[str, Any]] = [
        {"block": "stem", "cout": c, "k": rng.choice(st["kernel"]), "stride": stride, "act": rng.choice(acts),
         "maxpool": bool(size >= 96 and rng.random() < st["maxpool_prob"])}
    ]
    h = size // stride // (2 if layers[0]["maxpool"] else 1)
    mmacs = size * size / stride / stride * cin * c * layers[0]["k"] ** 2 / 1e6
    lo, hi = suite["blocks"]
    families = list(suite["block_weights"])
    weights = [suite["block_weights"][f] for f in families]
    r = suite["channel_round"]
    for _ in range(rng.randint(lo, hi)):
        fam = rng.choices(families, weights)[0]
        p2 = suite["stride2_prob"] if h <= suite["large_feature"] else 0.75
        s = 2 if (h // 2 >= suite["min_feature"] and rng.random() < p2) else 1
        grow = rng.choice(suite["channel_growth"]) * (1.5 if s == 2 else 1.0)
        cap = max(2 * r, _round(suite["channel_cap_x_feature"] / max(h // s, 1), r))
        cout = min(suite["max_channels"], cap, _round(c * grow, r))
        if fam in ("basic", "conv"):
            cout = min(cout, suite["max_dense_channels"])
        act = rng.choice(acts)
        if fam == "mbconv":
            m = suite["mbconv"]
            spec = {"block": "mbconv", "cout": cout, "expand": rng.choice(m["expand"]), "k": rng.choice(m["kernel"]),
                    "stride": s, "act": act, "se": rng.random() < m["se_prob"], "se_gate": rng.choice(m["se_gate"])}
        elif fam == "basic":
            spec = {"block": "basic", "cout": cout, "stride": s}
        elif fam == "bottleneck":
            b = suite["bottleneck"]
            gw = rng.choice(b["group_width"])
            ratio = rng.choice(b["bottleneck_ratio"])
            mid = max(gw, _round(cout / ratio, gw))
            spec = {"block": "bottleneck", "cout": cout, "mid": mid, "group_width": gw, "stride": s}
        elif fam == "shuffle":
            cout = max(2 * r, cout // (2 * r) * 2 * r)
            spec = {"block": "shuffle", "cout": cout, "stride": s}
        elif fam == "fire":
            sq = max(r, _round(cout / 8, r))
            spec = {"block": "fire", "squeeze": sq, "cout": max(2 * r, cout // (2 * r) * 2 * r), "maxpool": s == 2}
        else:
            spec = {"block": "conv", "cout": cout, "k": rng.choice([1, 3, 3, 5]), "stride": s, "act": act,
                    "groups": 1}
        est = _block_mmacs(spec, c, h)
        if layers[1:] and mmacs + est > suite["max_mmacs"]:
            break
        mmacs += est
        layers.append(spec)
        c = spec["cout"]
        h = h // s
    hd = suite["head"]
    layers.append({
        "block": "head",
        "conv": rng.choice(hd["conv_channels"]) if rng.random() < hd["conv_prob"] else 0,
        "act": rng.choice(acts),
        "hidden": rng.choice(hd["hidden"]) if rng.random() < hd["hidden_prob"] else 0,
        "classes": rng.choice(hd["classes"]),
        "keepdim": rng.random() < hd["keepdim_prob"],
    })
    return {"name": f"suite{suite['suite_version']}-{i:04d}", "input": [1, cin, size, size], "layers": layers}


def _block_mmacs(b: dict[str, Any], cin: int, h: int) -> float:
    """Rough MACs (millions) of one block, to keep suite networks inside the suite's MAC budget."""
    s = b.get("stride", 2 if b.get("maxpool") else 1)
    ho = max(h // s, 1)
    cout = b["cout"]
    if b["block"] == "mbconv":
        mid = cin * b["expand"]
        macs = h * h * cin * mid + ho * ho * mid * (b["k"] ** 2 + cout)
    elif b["block"] == "basic":
        macs = ho * ho * cout * (cin * 9 + cout * 9 + cin)
    elif b["block"] == "bottleneck":
        mid = b["mid"]
        macs = h * h * cin * mid + ho * ho * (mid * 9 * b["group_width"] + mid * cout + cin * cout)
    elif b["block"] == "shuffle":
        macs = ho * ho * cout * (cin + cout + 9)
    elif b["block"] == "fire":
        macs = ho * ho * (cin * b["squeeze"] + b["squeeze"] * cout * 5)
    else:
        macs = ho * ho * cin * cout * b["k"] ** 2
    return macs / 1e6


def reference_spec(suite: dict[str, Any]) -> dict[str, Any]:
    ref = suite["reference"]
    return {"name": f"suite{suite['suite_version']}-reference", "input": list(ref["input"]), "layers": ref["layers"]}


# ------------------------------------------------------------------------------------------------- modules


def _act(name: str) -> nn.Module:
    return {
        "relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "silu": nn.SiLU,
        "sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid,
    }[name]()


def _cba(cin: int, cout: int, k: int, s: int, groups: int = 1, act: str | None = "relu") -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(_act(act))
    return nn.Sequential(*layers)


class _SE(nn.Module):
    def __init__(self, c: int, squeeze: int, act: str, gate: str):
        super().__init__()
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.act = _act("relu" if act in ("relu6",) else act)
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.gate = _act(gate)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class _MBConv(nn.Module):
    def __init__(self, cin: int, b: dict[str, Any]):
        super().__init__()
        mid = cin * b["expand"]
        layers: list[nn.Module] = []
        if b["expand"] != 1:
            layers.append(_cba(cin, mid, 1, 1, act=b["act"]))
        layers.append(_cba(mid, mid, b["k"], b["stride"], groups=mid, act=b["act"]))
        if b.get("se"):
            layers.append(_SE(mid, max(8, cin // 4 // 8 * 8), b["act"], b.get("se_gate", "sigmoid")))
        layers.append(_cba(mid, b["cout"], 1, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = b["stride"] == 1 and cin == b["cout"]

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class _Basic(nn.Module):
    def __init__(self, cin: int, b: dict[str, Any]):
        super().__init__()
        s, cout = b["stride"], b["cout"]
        self.c1 = _cba(cin, cout, 3, s)
        self.c2 = _cba(cout, cout, 3, 1, act=None)
        self.down = _cba(cin, cout, 1, s, act=None) if (s != 1 or cin != cout) else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        idt = self.down(x) if self.down is not None else x
        return self.relu(self.c2(self.c1(x)) + idt)


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, b: dict[str, Any]):
        super().__init__()
        s, cout, mid, gw = b["stride"], b["cout"], b["mid"], b["group_width"]
        self.a = _cba(cin, mid, 1, 1)
        self.b = _cba(mid, mid, 3, s, groups=max(1, mid // gw))
        self.c = _cba(mid, cout, 1, 1, act=None)
        self.down = _cba(cin, cout, 1, s, act=None) if (s != 1 or cin != cout) else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        idt = self.down(x) if self.down is not None else x
        return self.relu(self.c(self.b(self.a(x))) + idt)


class _Shuffle(nn.Module):
    def __init__(self, cin: int, b: dict[str, Any]):
        super().__init__()
        s, cout = b["stride"], b["cout"]
        half = cout // 2
        self.stride = s
        if s == 1 and cin == cout:
            self.branch1 = None
            bin_ = cin // 2
        else:
            self.branch1 = nn.Sequential(_cba(cin, cin, 3, s, groups=cin, act=None), _cba(cin, half, 1, 1))
            bin_ = cin
        self.branch2 = nn.Sequential(_cba(bin_, half, 1, 1), _cba(half, half, 3, s, groups=half, act=None),
                                     _cba(half, half, 1, 1))

    def forward(self, x):
        if self.branch1 is None:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        n, c, h, w = out.shape
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class _Fire(nn.Module):
    def __init__(self, cin: int, b: dict[str, Any]):
        super().__init__()
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True) if b.get("maxpool") else None
        half = b["cout"] // 2
        self.squeeze = nn.Sequential(nn.Conv2d(cin, b["squeeze"], 1), nn.ReLU(inplace=True))
        self.e1 = nn.Sequential(nn.Conv2d(b["squeeze"], half, 1), nn.ReLU(inplace=True))
        self.e3 = nn.Sequential(nn.Conv2d(b["squeeze"], half, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x):
        if self.pool is not None:
            x = self.pool(x)
        x = self.squeeze(x)
        return torch.cat([self.e1(x), self.e3(x)], 1)


class _Head(nn.Module):
    def __init__(self, cin: int, b: dict[str, Any]):
        super().__init__()
        self.conv = _cba(cin, b["conv"], 1, 1, act=b["act"]) if b["conv"] else None
        c = b["conv"] or cin
        self.keepdim = b["keepdim"]
        fc: list[nn.Module] = []
        if b["hidden"]:
            fc += [nn.Linear(c, b["hidden"]), _act(b["act"]), nn.Dropout(0.2)]
            c = b["hidden"]
        fc.append(nn.Linear(c, b["classes"]))
        self.fc = nn.Sequential(*fc)

    def forward(self, x):
        if self.conv is not None:
            x = self.conv(x)
        if self.keepdim:
            x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        else:
            x = x.mean((2, 3))
        return self.fc(x)


class SuiteNet(nn.Module):
    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        c = spec["input"][1]
        blocks: list[nn.Module] = []
        for b in spec["layers"]:
            kind = b["block"]
            if kind == "stem":
                m: nn.Module = _cba(c, b["cout"], b["k"], b["stride"], act=b["act"])
                if b.get("maxpool"):
                    m = nn.Sequential(m, nn.MaxPool2d(3, 2, 1))
            elif kind == "conv":
                m = _cba(c, b["cout"], b["k"], b["stride"], groups=b.get("groups", 1), act=b["act"])
            else:
                m = {"mbconv": _MBConv, "basic": _Basic, "bottleneck": _Bottleneck, "shuffle": _Shuffle,
                     "fire": _Fire, "head": _Head}[kind](c, b)
            blocks.append(m)
            c = b.get("cout", c)
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(x)


def build_network(spec: dict[str, Any], seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """(module in eval mode with deterministic random weights and BN statistics, batch-1 example input)."""
    gen = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = SuiteNet(spec)
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):  # non-trivial statistics, so folded biases are not all equal
                mod.running_mean.uniform_(-0.1, 0.1, generator=gen)
                mod.running_var.uniform_(0.5, 1.5, generator=gen)
                mod.weight.data.uniform_(0.5, 1.5, generator=gen)
                mod.bias.data.uniform_(-0.1, 0.1, generator=gen)
    finally:
        torch.random.set_rng_state(torch_state)
    x = torch.randn(*spec["input"], generator=gen)
    return model.eval(), x
