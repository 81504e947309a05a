"""Make (or find) an emulated device's root: a Debian root for the architecture, its runtimes and native runner.

`create()` builds it under the emulator cache (`$EDGEPRUNE_EMULATOR_DIR`, else `<user cache>/edgeprune/emulator`):

1. the Debian system (`debootstrap --variant=minbase`), cached as `base-<hash>` by suite, architecture and packages;
2. a copy of it, `<arch>-<recipe hash>`, gets the runtimes' wheels for the architecture (installed by this machine's
   pip with `--platform`, no emulation), the native ExecuTorch runner (cross-compiled), an ARM `/proc/cpuinfo` and
   `/sys/devices/system/cpu/{possible,present,online}` (cpuinfo, which XNNPACK and onnxruntime use, refuses to start
   without them), `getprop`, and the emulation marker `/etc/edgeprune/emulated` (`qemu cortex-a76`).

Both are assembled in a `.partial` folder and renamed into place whole, so an interrupted create leaves nothing that
looks finished. Running the root needs root (chroot) and qemu registered with binfmt_misc with the F flag.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edgeprune.emulator import recipe as rc
from edgeprune.errors import DeviceError
from edgeprune.runners import native_runner

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
APT_PACKAGES = "qemu-user-static binfmt-support debootstrap g++-aarch64-linux-gnu"


@dataclass(frozen=True)
class Root:
    """A finished root: its folder, recipe, and how long it took to create (0 when it was found in the cache)."""

    path: Path
    recipe: rc.Recipe
    created_s: float
    cached: bool

    @property
    def arch(self) -> rc.Arch:
        return rc.arch(self.recipe.arch)


def emulator_dir() -> Path:
    """Where roots are kept: $EDGEPRUNE_EMULATOR_DIR, else the user cache dir's edgeprune/emulator (as runners/cache)."""
    if os.environ.get("EDGEPRUNE_EMULATOR_DIR"):
        return Path(os.environ["EDGEPRUNE_EMULATOR_DIR"]).expanduser()
    from edgeprune.runners.cache import cache_root

    return cache_root().parent / "emulator"


# ------------------------------------------------------------------------------------------------ host checks


def check_host(a: rc.Arch, *, euid: int | None = None, binfmt_dir: Path = BINFMT_DIR) -> None:
    """Root, and qemu for `a` registered with binfmt_misc (enabled, F flag): else a DeviceError saying what to run."""
    if (os.geteuid() if euid is None else euid) != 0:
        raise DeviceError("the emulated device needs root (debootstrap, chroot and sshd's ChrootDirectory); run "
                          "edgeprune emulator as root, e.g. with sudo")  # fmt: skip
    enable = f"update-binfmts --enable qemu-{a.qemu}"
    if not (binfmt_dir / "register").exists():
        raise DeviceError(f"binfmt_misc is not mounted, so {a.name} programs cannot run here; run: mount -t binfmt_misc "
                          f"binfmt_misc {binfmt_dir} && {enable}")  # fmt: skip
    entry = binfmt_dir / f"qemu-{a.qemu}"
    if not entry.is_file():
        raise DeviceError(f"qemu-{a.qemu} is not registered with binfmt_misc; run: apt-get install -y qemu-user-static "
                          f"binfmt-support && {enable}")  # fmt: skip
    text = entry.read_text()
    if not text.startswith("enabled"):
        raise DeviceError(f"qemu-{a.qemu} is registered with binfmt_misc but disabled; run: {enable}")
    flags = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags:")), "")
    if "F" not in flags:
        raise DeviceError(f"qemu-{a.qemu} is registered without binfmt's F flag, so it cannot run inside a chroot; "
                          f"register Debian's static qemu: apt-get install -y qemu-user-static binfmt-support && {enable}")


def _need_tools(*tools: tuple[str, str]) -> None:
    missing = [(tool, pkg) for tool, pkg in tools if shutil.which(tool) is None]
    if missing:
        names = ", ".join(t for t, _ in missing)
        raise DeviceError(f"{names} not installed; run: apt-get install -y {' '.join(sorted({p for _, p in missing}))}")


def apt_mirror(sources: tuple[Path, ...] = (Path("/etc/apt/sources.list.d/debian.sources"),
                                            Path("/etc/apt/sources.list"))) -> str:  # fmt: skip
    """The Debian mirror of this machine's apt sources (debootstrap fetches from it), else deb.debian.org."""
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and len(words) > 2 and "security" not in words[-2]:
                return next(w for w in words[1:] if "://" in w)
    return rc.DEFAULT_MIRROR


def _run(argv: list[str], step: str, timeout_s: float, **kwargs) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, **kwargs)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{step} took longer than {timeout_s:g} s; check the network and run it again") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise DeviceError(f"{step} failed (exit {proc.returncode}): {(lines or ['no message'])[-1][:400]}")
    return proc


# ------------------------------------------------------------------------------------------------ building


def find(arch_name: str = "arm64", cpu: str = rc.DEFAULT_CPU) -> Root | None:
    """The cached root for this recipe, or None."""
    recipe = rc.make_recipe(arch_name, cpu)
    path = emulator_dir() / f"{recipe.arch}-{recipe.sha256[:16]}"
    if not (path / rc.DEVICE_JSON.lstrip("/")).is_file():
        return None
    info = json.loads((path / rc.DEVICE_JSON.lstrip("/")).read_text())
    return Root(path, recipe, float(info.get("created_s", 0.0)), True)


def create(arch_name: str = "arm64", cpu: str = rc.DEFAULT_CPU, *, mirror: str | None = None, log=None) -> Root:
    """The root for `arch_name` pinned to `cpu`: from the cache, or built now (a few minutes). `log(text)` reports."""
    a = rc.arch(arch_name)
    rc.check_cpu(a, cpu)
    found = find(arch_name, cpu)
    if found is not None:
        return found
    check_host(a)
    _need_tools(("debootstrap", "debootstrap"), (a.cross_cxx, "g++-aarch64-linux-gnu"), ("chroot", "coreutils"))
    recipe = rc.make_recipe(arch_name, cpu)
    say = log or (lambda text: None)
    start = time.perf_counter()
    home = emulator_dir()
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o755)
    base = _base(recipe, a, home, mirror or apt_mirror(), say)
    final = home / f"{recipe.arch}-{recipe.sha256[:16]}"
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    say(f"copying the Debian root into {final.name}")
    _run(["cp", "-a", "--reflink=auto", str(base), str(partial)], "copying the Debian root", 600)
    try:
        _install_wheels(partial, recipe, a, say)
        _install_runner(partial, a, say)
        _describe_device(partial, recipe, a)
        _smoke_test(partial, recipe, a)
        elapsed = time.perf_counter() - start
        info = {"recipe": recipe.to_dict(), "recipe_sha256": recipe.sha256, "emulated": recipe.marker,
                "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "created_s": round(elapsed, 1)}
        (partial / rc.DEVICE_JSON.lstrip("/")).write_text(json.dumps(info, indent=2) + "\n")
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Root(final, recipe, elapsed, False)


def _base(recipe: rc.Recipe, a: rc.Arch, home: Path, mirror: str, say) -> Path:
    base = home / f"base-{recipe.arch}-{recipe.base_sha256[:16]}"
    if (base / "etc/debian_version").is_file() and (base / "usr/bin/python3").exists():
        return base
    partial = base.with_name(base.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    say(f"debootstrap {recipe.suite} {a.debian} from {mirror} (about 3 minutes)")
    try:
        _run(["debootstrap", f"--arch={a.debian}", "--variant=minbase", f"--include={','.join(recipe.packages)}",
              recipe.suite, str(partial), mirror], "debootstrap", 3600)  # fmt: skip
        shutil.rmtree(partial / "var/cache/apt/archives", ignore_errors=True)
        (partial / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        os.replace(partial, base)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return base


def _install_wheels(root: Path, recipe: rc.Recipe, a: rc.Arch, say) -> None:
    site = root / rc.SITE_DIR.lstrip("/")
    common = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(site), "--only-binary=:all:",
              "--python-version", recipe.python_version, "--implementation", "cp",
              *[f"--platform={p}" for p in a.pip_platforms]]  # fmt: skip
    with_deps = [f"{d}=={recipe.wheels[d]}" for d in ("numpy", *rc.RUNTIME_DISTS) if d in recipe.wheels]
    no_deps = [f"{d}=={recipe.wheels[d]}" for d in rc.NO_DEPS_DISTS if d in recipe.wheels]
    say(f"installing {a.name} wheels: {', '.join(with_deps + no_deps)}")
    _run(common + with_deps, f"pip install of the {a.name} wheels", 1800)
    _run(common + ["--no-deps", *no_deps], f"pip install of the {a.name} executorch wheel", 1800)
    pth = root / "usr/lib/python3/dist-packages/edgeprune-site.pth"
    pth.write_text(rc.SITE_DIR + "\n")


def _install_runner(root: Path, a: rc.Arch, say) -> None:
    say(f"building {native_runner.RUNNER_NAME} with {a.cross_cxx}")
    et_dir = root / rc.SITE_DIR.lstrip("/") / "executorch"
    runner_dir = root / rc.RUNNER_DIR.lstrip("/")
    runner_dir.mkdir(parents=True, exist_ok=True)
    native_runner.compile_runner(runner_dir / native_runner.RUNNER_NAME, a.uname, et_dir,
                                 link_dirs=(root / f"usr/lib/{a.uname}-linux-gnu",))  # fmt: skip
    (runner_dir / "lib").symlink_to(f"{rc.SITE_DIR}/executorch/lib")
    link = root / rc.RUNNER_LINK.lstrip("/")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(f"{rc.RUNNER_DIR}/{native_runner.RUNNER_NAME}")


def _describe_device(root: Path, recipe: rc.Recipe, a: rc.Arch) -> None:
    cpu_dir = root / "sys/devices/system/cpu"
    cpu_dir.mkdir(parents=True, exist_ok=True)
    span = f"0-{recipe.cores - 1}\n"
    for name in ("possible", "present", "online"):
        (cpu_dir / name).write_text(span)
    for i in range(recipe.cores):
        (cpu_dir / f"cpu{i}").mkdir(exist_ok=True)
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc/cpuinfo").write_text(rc.cpuinfo_text(a, recipe.cpu, recipe.cores))
    etc = root / "etc/edgeprune"
    etc.mkdir(parents=True, exist_ok=True)
    (root / rc.MARKER.lstrip("/")).write_text(recipe.marker + "\n")
    (root / rc.GETPROP_TXT.lstrip("/")).write_text(rc.getprop_text(recipe, a))
    getprop = root / "usr/local/bin/getprop"
    getprop.write_text(
        "#!/bin/sh\n# Android-style properties of the emulated device (edgeprune's adb front reads them).\n"
        f"f={rc.GETPROP_TXT}\n"
        'if [ $# -eq 0 ]; then cat "$f"; exit 0; fi\n'
        "v=$(grep -F \"[$1]: [\" \"$f\" | head -n 1 | sed 's/^\\[[^]]*\\]: \\[\\(.*\\)\\]$/\\1/')\n"
        'if [ -z "$v" ] && [ $# -ge 2 ]; then v=$2; fi\n'
        "printf '%s\\n' \"$v\"\n"
    )
    getprop.chmod(0o755)
    tmp = root / rc.DEVICE_TMP.lstrip("/")
    tmp.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o1777)


def chroot_argv(root: Path, argv: list[str]) -> list[str]:
    """`argv` run inside the root (its environment must carry QEMU_CPU: see `device_env`)."""
    return [shutil.which("chroot") or "/usr/sbin/chroot", str(root), *argv]


def device_env(recipe: rc.Recipe) -> dict[str, str]:
    """The environment of every process on the device: the pinned CPU model, and a plain PATH."""
    return {"QEMU_CPU": recipe.cpu, "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root",
            "LANG": "C.UTF-8"}  # fmt: skip


def _smoke_test(root: Path, recipe: rc.Recipe, a: rc.Arch) -> None:
    """The root runs: its python reports the architecture, and the native runner starts."""
    proc = _run(chroot_argv(root, ["python3", "-c", "import platform, numpy; print(platform.machine())"]),
                "starting python3 on the emulated device", 300, env=device_env(recipe))  # fmt: skip
    if proc.stdout.strip() != a.uname:
        raise DeviceError(f"the emulated device's python reports '{proc.stdout.strip()}', not {a.uname}")
    _run(chroot_argv(root, [rc.RUNNER_LINK, "--help"]), f"starting {native_runner.RUNNER_NAME} on the emulated device",
         300, env=device_env(recipe))  # fmt: skip
