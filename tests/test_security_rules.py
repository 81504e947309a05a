"""The project's own code keeps its safety rules: no shell, no unsafe YAML, no pickle-loading torch.load. The rules
are checked on the parsed source (calls and their keywords), so a comment or a string naming them does not count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.joinpath("edgeprune").rglob("*.py"), *ROOT.joinpath("bench").rglob("*.py"),
                  *ROOT.joinpath("tests").rglob("*.py")])


def _calls(source: str, label: str):
    for node in ast.walk(ast.parse(source, filename=label)):
        if isinstance(node, ast.Call):
            yield node


def _name(call: ast.Call) -> str:
    parts = []
    func = call.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _violations(source: str, label: str) -> list[str]:
    found = []
    for call in _calls(source, label):
        name, where = _name(call), f"{label}:{call.lineno}"
        shell = _keyword(call, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            found.append(f"{where}: {name}(shell=...)")
        if name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load"):
            found.append(f"{where}: {name} (use yaml.safe_load)")
        if name == "torch.load":
            weights_only = _keyword(call, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        if name in ("os.system", "os.popen"):
            found.append(f"{where}: {name} (use subprocess with an argument list)")
    return found


def test_no_shell_no_unsafe_yaml_no_unsafe_torch_load():
    assert len(SOURCES) > 50
    violations = [v for path in SOURCES for v in _violations(path.read_text(), str(path.relative_to(ROOT)))]
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("line", [
    "import subprocess\nsubprocess.run('ls', shell=True)\n",
    "import yaml\nyaml.load(open('x'))\n",
    "import torch\ntorch.load('m.pt')\n",
    "import torch\ntorch.load('m.pt', weights_only=False)\n",
    "import os\nos.system('ls')\n",
])
def test_the_check_catches_each_rule(line):
    assert _violations(line, "probe.py")
