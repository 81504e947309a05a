"""What an emulated device's root holds, and the content hash that names it.

The recipe is everything that decides the root's content: the Debian suite, architecture and packages, the runtime
wheels (at the versions installed on this machine, so the device runs what the host was measured with), the native
ExecuTorch runner's source, the fake CPU description, and the pinned CPU model. Its sha256 names the root's folder,
so a changed recipe makes a new root and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib import metadata

from edgeprune._resources import data_dir
from edgeprune.errors import ConfigError

RECIPE_VERSION = 1
"""Bump when the way a root is assembled changes (not its inputs: those are hashed)."""

SUITE = "bookworm"
PYTHON_VERSION = "3.11"
"""bookworm's python3, which the aarch64 wheels are picked for."""
PACKAGES = ("python3", "ca-certificates", "libstdc++6", "libgomp1")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_CPU = "cortex-a76"
CORES = 4
"""CPUs the device describes in its fake /sys and /proc/cpuinfo (a Raspberry Pi 5's four Cortex-A76)."""

SITE_DIR = "/opt/site"
"""Where the aarch64 wheels are installed inside the root (on python3's path through a .pth file)."""
RUNNER_DIR = "/opt/edgeprune/runner"
RUNNER_LINK = "/usr/local/bin/edgeprune_executorch_runner"
MARKER = "/etc/edgeprune/emulated"
"""One line, e.g. `qemu cortex-a76`: how a runner (over ssh or adb) learns that the device is emulated."""
DEVICE_JSON = "/etc/edgeprune/device.json"
GETPROP_TXT = "/etc/edgeprune/getprop.txt"
DEVICE_TMP = "/data/local/tmp"
"""The adb runner's default device folder lives under it, as on a phone."""


@dataclass(frozen=True)
class Arch:
    name: str
    debian: str
    qemu: str
    uname: str
    abi: str
    cross_cxx: str
    pip_platforms: tuple[str, ...]
    cpus: dict[str, tuple[str, str]]
    """qemu CPU model -> (/proc/cpuinfo 'CPU part', 'Features')."""


_A76_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
_V8_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"

ARCHES = {
    "arm64": Arch(
        name="arm64", debian="arm64", qemu="aarch64", uname="aarch64", abi="arm64-v8a",
        cross_cxx="aarch64-linux-gnu-g++",
        pip_platforms=("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                       "manylinux2014_aarch64"),
        cpus={"cortex-a76": ("0xd0b", _A76_FEATURES), "neoverse-n1": ("0xd0c", _A76_FEATURES),
              "cortex-a72": ("0xd08", _V8_FEATURES), "cortex-a57": ("0xd07", _V8_FEATURES),
              "cortex-a53": ("0xd03", _V8_FEATURES)},
    ),
}  # fmt: skip
"""Emulated architectures. qemu's default model (`max`) is left out on purpose: XNNPACK computed wrong int8 and
ExecuTorch outputs on it, while the real cores above matched the host."""

RUNTIME_DISTS = ("onnxruntime", "ai-edge-litert")
"""Runtimes with a Python API on the device (with numpy; resolved with their dependencies)."""
NO_DEPS_DISTS = ("executorch",)
"""Installed without dependencies: the aarch64 torch wheel it asks for is a CUDA build that is not served; the native
runner links executorch's torch-free shared libraries instead."""


def arch(name: str) -> Arch:
    if name not in ARCHES:
        raise ConfigError(f"unknown emulator architecture '{name}'; known: {', '.join(ARCHES)}")
    return ARCHES[name]


def check_cpu(a: Arch, cpu: str) -> str:
    if cpu not in a.cpus:
        raise ConfigError(
            f"CPU model '{cpu}' is not offered for {a.name}; known: {', '.join(a.cpus)} (qemu's 'max' computed wrong "
            "XNNPACK outputs, so a real core is pinned)"
        )
    return cpu


def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Recipe:
    arch: str
    cpu: str
    suite: str = SUITE
    packages: tuple[str, ...] = PACKAGES
    python_version: str = PYTHON_VERSION
    cores: int = CORES
    wheels: dict[str, str] = field(default_factory=dict)
    """pip requirement name -> version pinned (numpy, the runtimes, executorch)."""
    runner_source_sha256: str = ""
    version: int = RECIPE_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def base_sha256(self) -> str:
        """The part debootstrap makes (suite, architecture, packages): cached on its own, so that a change of wheels
        or runner does not download the Debian system again."""
        base = {"arch": self.arch, "suite": self.suite, "packages": list(self.packages), "version": self.version}
        return hashlib.sha256(json.dumps(base, sort_keys=True).encode()).hexdigest()

    @property
    def marker(self) -> str:
        return f"qemu {self.cpu}"


def runner_source_dir():
    return data_dir("targets") / "executorch_runner"


def runner_source_sha256() -> str:
    digest = hashlib.sha256()
    for path in sorted(runner_source_dir().glob("*.cpp")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def make_recipe(arch_name: str = "arm64", cpu: str = DEFAULT_CPU) -> Recipe:
    """The recipe for `arch_name` pinned to `cpu`, with the wheel versions installed on this machine."""
    a = arch(arch_name)
    check_cpu(a, cpu)
    wheels = {"numpy": _installed("numpy")}
    for dist in (*RUNTIME_DISTS, *NO_DEPS_DISTS):
        wheels[dist] = _installed(dist)
    if wheels["executorch"] is None or wheels["numpy"] is None:
        raise ConfigError("the emulated device is built with this machine's executorch and numpy versions, and one is "
                          "not installed; pip install executorch numpy")  # fmt: skip
    return Recipe(arch=a.name, cpu=cpu, wheels={k: v for k, v in wheels.items() if v is not None},
                  runner_source_sha256=runner_source_sha256())  # fmt: skip


def cpuinfo_text(a: Arch, cpu: str, cores: int) -> str:
    """An ARM /proc/cpuinfo for `cores` cores of `cpu` (cpuinfo, used by XNNPACK and onnxruntime, reads the part)."""
    part, features = a.cpus[cpu]
    blocks = [
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: {part}\nCPU revision\t: 1\n"
        for i in range(cores)
    ]
    return "\n".join(blocks) + "\n"


def getprop_text(recipe: Recipe, a: Arch) -> str:
    """What `getprop` answers on the emulated device (the adb front reads it like a phone's properties)."""
    props = {
        "ro.product.model": f"edgeprune emulated {a.name} ({recipe.marker})",
        "ro.product.manufacturer": "edgeprune",
        "ro.product.brand": "edgeprune",
        "ro.product.device": f"emulated-{a.name}",
        "ro.product.name": f"emulated-{a.name}",
        "ro.product.cpu.abi": a.abi,
        "ro.product.cpu.abilist": a.abi,
        "ro.hardware": "qemu",
        "ro.kernel.qemu": "1",
        "edgeprune.emulated": recipe.marker,
    }
    return "".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items()))
