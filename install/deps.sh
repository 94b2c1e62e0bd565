#!/bin/sh
# Installs every build and test dependency of spark-tune on Debian 12 (bookworm) with apt-get, and
# tools/lint's clang-format and clang-tidy, what the packages need (install/build-deb: dpkg-dev,
# lintian; arm64: mmdebstrap and the cross compiler; the arm64 libraries go into a sysroot, never
# onto this host).
# Idempotent: when everything is installed already it changes nothing.
set -eu
PKGS="build-essential cmake pkg-config ccache git
clang llvm clang-format-14 clang-tidy-14 libbpf-dev bpftool libelf-dev zlib1g-dev
libsystemd-dev systemd libcap-dev
libcli11-dev libtomlplusplus-dev nlohmann-json3-dev prometheus-cpp-dev
libgtest-dev libgmock-dev libfuzzer-14-dev libclang-rt-14-dev
python3 util-linux procps
bpftrace
dpkg-dev lintian mmdebstrap debian-archive-keyring crossbuild-essential-arm64"
# shellcheck disable=SC2086
"$(dirname "$0")/apt-ensure" $PKGS
echo "deps: all installed"
