"""The runner cache: native benchmark programs the user adds once, found again by kind and ABI.

`edgeprune runners add PATH` copies a device binary into the user cache dir (`$EDGEPRUNE_CACHE_DIR/runners`, else
`$XDG_CACHE_HOME/edgeprune/runners`, else `~/.cache/edgeprune/runners`) under `<kind>/<abi>/<file name>`. The kind
comes from the file name (`benchmark_model`, `executor_runner`, `onnxruntime_perf_test`; a prefix or suffix such as
`android_arm64_benchmark_model` is fine), the ABI from the ELF header's machine field. The adb runner pushes the
binary for an artifact's format (`.tflite` → benchmark_model, `.pte` → executor_runner, `.onnx`/`.ort` →
onnxruntime_perf_test) and the device's ABI (`ro.product.cpu.abi`).

edgeprune's own native ExecuTorch runner (`edgeprune_executorch_runner`, built by `runners/native_runner.py`) is a
*bundle*, the program with the `lib/` folder of shared libraries it loads; `add` takes its folder and keeps it whole
under `edgeprune_executorch_runner/<abi>/`. The ssh and adb runners push it for `.pte` when the device has none.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeprune.errors import ConfigError

KINDS = ("benchmark_model", "executor_runner", "onnxruntime_perf_test")
NATIVE_KIND = "edgeprune_executorch_runner"
"""edgeprune's native ExecuTorch runner: a folder (program + lib/), not one file."""
KIND_FOR_SUFFIX = {
    ".tflite": "benchmark_model",
    ".pte": "executor_runner",
    ".onnx": "onnxruntime_perf_test",
    ".ort": "onnxruntime_perf_test",
}
ABIS = ("arm64-v8a", "armeabi-v7a", "x86_64", "x86", "riscv64")
_ELF_MACHINE = {0xB7: "arm64-v8a", 0x28: "armeabi-v7a", 0x3E: "x86_64", 0x03: "x86", 0xF3: "riscv64"}
_ELF_CLASS = {"arm64-v8a": 2, "armeabi-v7a": 1, "x86_64": 2, "x86": 1, "riscv64": 2}


@dataclass(frozen=True)
class RunnerBinary:
    kind: str
    abi: str
    path: Path
    sha256: str
    size_bytes: int


def cache_root() -> Path:
    """Where runner binaries are kept: $EDGEPRUNE_CACHE_DIR/runners, else $XDG_CACHE_HOME/edgeprune/runners, …"""
    if os.environ.get("EDGEPRUNE_CACHE_DIR"):
        base = Path(os.environ["EDGEPRUNE_CACHE_DIR"]).expanduser()
    elif os.environ.get("XDG_CACHE_HOME"):
        base = Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "edgeprune"
    else:
        base = Path.home() / ".cache" / "edgeprune"
    return base / "runners"


def kind_of(path: Path) -> str:
    """The benchmark program kind named by a file name, or ConfigError listing the names accepted."""
    name = path.name.lower()
    found = [k for k in KINDS if k in name]
    if len(found) != 1:
        raise ConfigError(
            f"cannot tell which benchmark program '{path.name}' is; its file name must contain one of: "
            f"{', '.join(KINDS)} (rename it, e.g. to benchmark_model)"
        )
    return found[0]


def elf_abi(path: Path) -> str:
    """The Android ABI of an ELF executable, read from its header (EI_CLASS and e_machine)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError as exc:
        raise ConfigError(f"cannot read '{path}': {exc.strerror or exc}") from None
    return elf_header_abi(head, str(path))


def elf_header_abi(head: bytes, name: str) -> str:
    """The ABI named by the first 20 bytes of an ELF file (`name` is for the messages)."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise ConfigError(f"'{name}' is not an ELF executable; give a benchmark binary built for the device (e.g. arm64-v8a)")
    ei_class, ei_data = head[4], head[5]
    order = "<" if ei_data == 1 else ">"
    (machine,) = struct.unpack(order + "H", head[18:20])
    abi = _ELF_MACHINE.get(machine)
    if abi is None:
        raise ConfigError(f"'{name}' is an ELF file for machine 0x{machine:x}; known: arm64, arm, x86_64, x86, riscv64")
    if _ELF_CLASS[abi] != ei_class:
        raise ConfigError(f"'{name}' has an inconsistent ELF header (class {ei_class} for {abi})")
    return abi


def add(path: str | os.PathLike, *, root: Path | None = None) -> RunnerBinary:
    """Copy a benchmark binary (or a native runner bundle's folder) into the cache, replacing one of the same kind,
    ABI and name, and describe it."""
    src = Path(path).expanduser()
    if src.is_dir() and (src / NATIVE_KIND).is_file():
        return add_native(src, root=root)
    if not src.is_file():
        raise ConfigError(f"runner binary '{src}' does not exist; give the path to a benchmark program file")
    kind = kind_of(src)
    abi = elf_abi(src)
    dest_dir = (root or cache_root()) / kind / abi
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".add-")
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o755)
        dest = dest_dir / src.name
        os.replace(tmp, dest)
    except OSError as exc:
        raise ConfigError(
            f"cannot store '{src.name}' in the runner cache '{dest_dir}': {exc.strerror or exc}; "
            "set EDGEPRUNE_CACHE_DIR to a writable folder"
        ) from None
    return _describe(kind, abi, dest)


def add_native(bundle: Path, *, root: Path | None = None) -> RunnerBinary:
    """Copy a native runner bundle (a folder with `edgeprune_executorch_runner` and `lib/`) into the cache."""
    program = bundle / NATIVE_KIND
    if not program.is_file() or not (bundle / "lib").is_dir():
        raise ConfigError(f"'{bundle}' is not a runner bundle: it needs {NATIVE_KIND} and a lib/ folder beside it")
    abi = elf_abi(program)
    dest = (root or cache_root()) / NATIVE_KIND / abi
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".add-"))
        shutil.copytree(bundle, staging / "bundle", symlinks=False)
        old = dest.with_name(f".old-{abi}")
        if dest.exists():
            os.replace(dest, old)
        os.replace(staging / "bundle", dest)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot store '{bundle}' in the runner cache '{dest.parent}': {exc.strerror or exc}; "
            "set EDGEPRUNE_CACHE_DIR to a writable folder"
        ) from None
    return _describe(NATIVE_KIND, abi, dest / NATIVE_KIND)


def find_native(abi: str, *, root: Path | None = None) -> RunnerBinary | None:
    """The cached native runner bundle for `abi` (its program; the libraries are in `lib/` beside it), or None."""
    program = (root or cache_root()) / NATIVE_KIND / abi / NATIVE_KIND
    return _describe(NATIVE_KIND, abi, program) if program.is_file() else None


def _describe(kind: str, abi: str, path: Path) -> RunnerBinary:
    data = path.read_bytes()
    return RunnerBinary(kind=kind, abi=abi, path=path, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def find(kind: str, abi: str, *, root: Path | None = None) -> RunnerBinary | None:
    """The cached binary of `kind` for `abi` (the most recently added if there are several), or None."""
    if kind not in KINDS:
        raise ConfigError(f"unknown runner kind '{kind}'; known: {', '.join(KINDS)}")
    folder = (root or cache_root()) / kind / abi
    if not folder.is_dir():
        return None
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if not files:
        return None
    newest = max(files, key=lambda p: p.stat().st_mtime)
    return _describe(kind, abi, newest)


def list_cached(*, root: Path | None = None) -> list[RunnerBinary]:
    """Every cached binary, sorted by kind, ABI and name."""
    base = root or cache_root()
    out = []
    for abi_dir in sorted((base / NATIVE_KIND).glob("[!.]*")):
        if (abi_dir / NATIVE_KIND).is_file():
            out.append(_describe(NATIVE_KIND, abi_dir.name, abi_dir / NATIVE_KIND))
    for kind in KINDS:
        for abi_dir in sorted((base / kind).glob("*")) if (base / kind).is_dir() else ():
            for p in sorted(abi_dir.iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    out.append(_describe(kind, abi_dir.name, p))
    return out


def kind_for_artifact(path: Path) -> str:
    """The benchmark program that runs an artifact, by its suffix."""
    kind = KIND_FOR_SUFFIX.get(path.suffix)
    if kind is None:
        raise ConfigError(f"no native benchmark program for '{path.name}'; known suffixes: {', '.join(KIND_FOR_SUFFIX)}")
    return kind
