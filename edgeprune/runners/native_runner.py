"""Build the native ExecuTorch runner (`targets/executorch_runner/`) for this machine or for aarch64 Linux.

The executorch wheel ships torch-free shared libraries (`executorch/lib/libexecutorch*.so`) and headers
(`executorch/include`); the runner is one C++ file compiled against them with `g++` (host) or Debian's
`aarch64-linux-gnu-g++` (ARM64), in a second or so, no CMake needed. The result is a *bundle*: the program with its
`lib/` folder beside it (found through the rpath `$ORIGIN/lib`), so it runs where it is copied without Python or
torch. `targets/executorch_runner/CMakeLists.txt` is the same build for CMake users (and Android's NDK).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgeprune._resources import data_dir
from edgeprune.errors import ConfigError, DeviceError, MissingDependencyError

RUNNER_NAME = "edgeprune_executorch_runner"
LIBS = ("executorch", "executorch_backend_xnnpack", "executorch_kernels_optimized", "executorch_kernels_quantized",
        "executorch_threadpool")  # fmt: skip
"""The wheel's libraries the runner links (the backend and kernel libraries register themselves when loaded, hence
`--no-as-needed`)."""
CROSS_CXX = {"x86_64": "g++", "aarch64": "aarch64-linux-gnu-g++"}
APT_FOR_CXX = {"g++": "g++", "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu"}
MACHINE_ABI = {"aarch64": "arm64-v8a", "arm64": "arm64-v8a", "x86_64": "x86_64", "armv7l": "armeabi-v7a",
               "i686": "x86", "riscv64": "riscv64"}  # fmt: skip
"""`uname -m` -> the ABI name the runner cache uses."""
PIP_PLATFORMS = {"aarch64": ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64")}


@dataclass(frozen=True)
class RunnerBundle:
    """A built runner: `path` is the program, `lib_dir` the shared libraries it loads, `abi` what it runs on."""

    path: Path
    lib_dir: Path
    abi: str


def source_file() -> Path:
    return data_dir("targets") / "executorch_runner" / f"{RUNNER_NAME}.cpp"


def host_machine() -> str:
    return os.uname().machine


def executorch_dir() -> Path:
    """The executorch package folder of this Python (its `lib/` and `include/`)."""
    try:
        dist = metadata.distribution("executorch")
    except metadata.PackageNotFoundError:
        raise MissingDependencyError("executorch", "executorch") from None
    return Path(dist.locate_file("executorch"))


def torch_include() -> Path:
    """torch's include folder, for `torch/headeronly/macros/cmake_macros.h` (header only: any architecture)."""
    try:
        dist = metadata.distribution("torch")
    except metadata.PackageNotFoundError:
        raise MissingDependencyError("torch", "executorch") from None
    return Path(dist.locate_file("torch")) / "include"


def fetch_executorch_wheel(machine: str, dest: Path) -> Path:
    """The executorch package folder of the wheel for `machine` (e.g. aarch64), at this machine's version, downloaded
    with pip (no dependencies) and unpacked under `dest`."""
    if machine not in PIP_PLATFORMS:
        raise ConfigError(f"no executorch wheel is published for '{machine}'; known: {', '.join(PIP_PLATFORMS)}")
    version = metadata.version("executorch")
    wheels = dest / "wheels"
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(wheels),
            "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}", "--implementation", "cp",
            *[f"--platform={p}" for p in PIP_PLATFORMS[machine]], f"executorch=={version}"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    found = sorted(wheels.glob("executorch-*.whl"))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise DeviceError(f"cannot download the {machine} executorch=={version} wheel: {last}")
    with zipfile.ZipFile(found[0]) as zf:
        zf.extractall(dest / "wheel")
    return dest / "wheel" / "executorch"


def compile_runner(out: Path, machine: str, et_dir: Path, *, cxx: str | None = None, rpath: str = "$ORIGIN/lib",
                   link_dirs: tuple[Path, ...] = ()) -> Path:
    """Compile the runner for `machine` against the executorch package folder `et_dir` into the file `out`."""
    cxx = cxx or CROSS_CXX.get(machine)
    if cxx is None:
        raise ConfigError(f"cannot build the runner for '{machine}'; known: {', '.join(CROSS_CXX)}")
    if shutil.which(cxx) is None:
        raise DeviceError(f"the C++ compiler '{cxx}' is not installed; apt-get install -y {APT_FOR_CXX.get(cxx, cxx)}")
    lib = et_dir / "lib"
    missing = [name for name in LIBS if not (lib / f"lib{name}.so").is_file()]
    if missing or not (et_dir / "include").is_dir():
        raise DeviceError(f"'{et_dir}' lacks the executorch wheel's shared libraries or headers ({', '.join(missing)}); "
                          "install executorch >= 1.0 from a wheel")  # fmt: skip
    version = metadata.version("executorch")
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [cxx, "-std=c++17", "-O2", "-Wno-deprecated-declarations",
            f"-I{et_dir / 'include'}", f"-I{et_dir / 'include/executorch/runtime/core/portable_type/c10'}",
            f"-I{torch_include()}", f'-DEDGEPRUNE_EXECUTORCH_VERSION="{version}"',
            str(source_file()), "-o", str(out), f"-L{lib}",
            *[f"-Wl,-rpath-link,{d}" for d in (lib, *link_dirs)],
            "-Wl,--no-as-needed", *[f"-l{name}" for name in LIBS], "-Wl,--as-needed",
            f"-Wl,-rpath,{rpath}"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if "error" in ln] or proc.stderr.splitlines() or ["no message"]
        raise DeviceError(f"{cxx} could not build {RUNNER_NAME}: {errors[0][:400]}")
    return out


def build_bundle(dest: Path, machine: str | None = None) -> RunnerBundle:
    """A runner bundle for `machine` (default: this machine) in the folder `dest`: the program and `lib/` holding
    the executorch libraries it loads (this Python's wheel for the host; the downloaded wheel otherwise)."""
    machine = machine or host_machine()
    if machine not in CROSS_CXX:
        raise ConfigError(f"cannot build {RUNNER_NAME} for '{machine}'; known: {', '.join(CROSS_CXX)}")
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="edgeprune-runner-") as tmp:
        et_dir = executorch_dir() if machine == host_machine() else fetch_executorch_wheel(machine, Path(tmp))
        staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=dest.parent if dest.parent.is_dir() else None))
        try:
            compile_runner(staging / RUNNER_NAME, machine, et_dir)
            (staging / "lib").mkdir()
            for name in LIBS:
                shutil.copy2(et_dir / "lib" / f"lib{name}.so", staging / "lib" / f"lib{name}.so")
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return RunnerBundle(path=dest / RUNNER_NAME, lib_dir=dest / "lib", abi=MACHINE_ABI[machine])


# ------------------------------------------------------------------------------------------------ on a device

PROBE_SCRIPT = (
    'echo "machine=$(uname -m)"; '
    f'r=$(command -v {RUNNER_NAME} 2>/dev/null) && echo "runner=$r" && '
    'echo "runner_elf=$(head -c 20 "$r" | od -An -v -tx1 | tr -d \' \\n\')"; '
    'if [ -r /etc/edgeprune/emulated ]; then echo "emulated=$(head -n 1 /etc/edgeprune/emulated)"; fi; true'
)
"""Fixed shell text (no user value in it) run once per device: its machine, the runner on its PATH with the first
bytes of that file (its ELF header), and the emulation marker an edgeprune emulated device carries."""


@dataclass(frozen=True)
class DeviceFacts:
    """What the probe found on a device."""

    machine: str | None
    runner_path: str | None
    runner_elf: bytes | None
    emulated: str | None
    """e.g. 'qemu cortex-a76' on an edgeprune emulated device (from /etc/edgeprune/emulated), else None."""

    @property
    def abi(self) -> str | None:
        return MACHINE_ABI.get(self.machine or "")


def parse_probe(text: str) -> DeviceFacts:
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("machine", "runner", "runner_elf", "emulated") and value.strip():
            found[key] = value.strip()
    elf = None
    if "runner_elf" in found:
        try:
            elf = bytes.fromhex(found["runner_elf"])
        except ValueError:
            elf = None
    return DeviceFacts(found.get("machine"), found.get("runner"), elf, found.get("emulated"))


@dataclass(frozen=True)
class NativeChoice:
    """How a device runs `.pte` natively: the runner already on it (`device_path`), or a bundle pushed with the run
    (`bundle`: the program, its libraries in `lib/` beside it)."""

    device_path: str | None = None
    bundle: Path | None = None
    abi: str = ""


def bundle_program(path: Path) -> Path:
    """The program of a runner bundle given as its folder or as the program file."""
    path = Path(path).expanduser()
    program = path / RUNNER_NAME if path.is_dir() else path
    if not program.is_file():
        raise ConfigError(f"native runner '{path}' does not exist; give a runner bundle folder (with {RUNNER_NAME} and "
                          "lib/) or its program")  # fmt: skip
    return program


def choose_native(facts: DeviceFacts, device_abi: str | None, where: str, *, explicit: Path | None = None,
                  cache_root: Path | None = None) -> NativeChoice | None:  # fmt: skip
    """The native runner for `.pte` on a device whose ABI is `device_abi`: an explicit bundle, else the one on the
    device's PATH, else the runner cache's bundle for the ABI; None when there is none. A runner built for another
    architecture is a DeviceError naming both."""
    from edgeprune.runners import cache

    def check(abi: str, what: str) -> None:
        if device_abi and abi != device_abi:
            machine = f"{facts.machine} ({device_abi})" if facts.machine else device_abi
            raise DeviceError(
                f"{what} is built for {abi}, but {where} is {machine}; build the runner for the device "
                f"(`edgeprune runners build --arch {_machine_for(device_abi)}`) and add it with `edgeprune runners add`"
            )

    if explicit is not None:
        program = bundle_program(explicit)
        abi = cache.elf_abi(program)
        check(abi, f"the native runner '{program}'")
        return NativeChoice(bundle=program, abi=abi)
    if facts.runner_path:
        if facts.runner_elf is None:
            raise DeviceError(f"{where}: cannot read the header of {facts.runner_path}")
        abi = cache.elf_header_abi(facts.runner_elf, facts.runner_path)
        check(abi, f"the {RUNNER_NAME} on {where} ({facts.runner_path})")
        return NativeChoice(device_path=facts.runner_path, abi=abi)
    if device_abi:
        found = cache.find_native(device_abi, root=cache_root)
        if found is not None:
            return NativeChoice(bundle=found.path, abi=device_abi)
    return None


def _machine_for(abi: str) -> str:
    return next((m for m, a in MACHINE_ABI.items() if a == abi), abi)
