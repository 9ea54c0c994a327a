#!/usr/bin/env bash
# Runs inside each `cross` image before the build (see Cross.toml). The images already carry the
# target's C compiler, which rusqlite's bundled SQLite and ring need; this only fails early, with
# a clear message, when an image lacks it, instead of deep inside a C build.
set -euo pipefail
# cross runs this while building the image, with the target's Debian architecture in
# CROSS_DEB_ARCH (arm64 or armhf).
arch="${CROSS_DEB_ARCH:-}"
case "$arch" in
    arm64) cc=aarch64-linux-gnu-gcc ;;
    armhf) cc=arm-linux-gnueabihf-gcc ;;
    *) echo "cross/pre-build.sh: unexpected CROSS_DEB_ARCH '$arch'" >&2; exit 1 ;;
esac
if ! command -v "$cc" >/dev/null; then
    echo "cross/pre-build.sh: the $arch image has no $cc (needed for SQLite and ring)" >&2
    exit 1
fi
echo "cross/pre-build.sh: $arch builds C with $($cc --version | head -n1)"
