#!/bin/sh
# Host packages for the real-kernel matrix (tests/vm/run): QEMU for amd64 and arm64 guests (TCG),
# mmdebstrap for the guests' root filesystems, e2fsprogs for the disk images (mkfs.ext4 -d, debugfs),
# qemu-user-static + binfmt-support to run an arm64 root's maintainer scripts on this amd64 host.
# Idempotent: changes nothing when everything is installed.
set -eu
PKGS="qemu-system-x86 qemu-system-arm qemu-utils mmdebstrap e2fsprogs qemu-user-static binfmt-support"
# shellcheck disable=SC2086
"$(dirname "$0")/../../install/apt-ensure" $PKGS

# arm64 roots: mmdebstrap runs their maintainer scripts through qemu-aarch64 (binfmt_misc, F flag).
if [ "$(id -u)" -eq 0 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
fi
echo "vm deps: binfmt qemu-aarch64 $(head -n 1 /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || echo missing)"
