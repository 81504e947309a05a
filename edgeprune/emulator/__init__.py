"""An emulated ARM64 device: a Debian root run by qemu-user through binfmt_misc, pinned to a real core, served as an
ssh board and an adb device on 127.0.0.1 (ARM64 Linux behind the adb protocol, not Android's userland).

- `recipe.py`: what the root holds (suite, packages, wheel versions, runner source, CPU model) and its content hash;
- `root.py`: host checks (root, binfmt), building or finding the root (`create`);
- `fronts.py`: the sshd and adb fronts (`start`, `stop`);
- `adbd.py`: edgeprune's own adb device (the protocol), and the emulated device behind it.

It hands the runners an ordinary device target (`ssh:root@127.0.0.1:PORT`, `adb:127.0.0.1:PORT`) and knows
nothing of artifacts. A device tells runners it is emulated through `/etc/edgeprune/emulated` (`qemu cortex-a76`),
which the ssh and adb runners read, so that validation records it and never judges latency on emulated time.
"""
