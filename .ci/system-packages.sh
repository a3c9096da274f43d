#!/usr/bin/env bash
# The Debian/Ubuntu system packages that `make demo` / `make test` need, installed when we can.
#
#   .ci/system-packages.sh demo|test            install what is missing (root, or passwordless sudo)
#   .ci/system-packages.sh --check demo|test    only check; exit 1 with the install line if missing
#
# demo: libgomp1 (OpenMP for torch's CPU kernels; the demo opens no window and renders nothing).
# test: also open3d's libraries (libusb-1.0-0 libgl1 libegl1) and Vulkan for the viewer's headless
#       snapshot (libvulkan1 mesa-vulkan-drivers: Mesa's software renderer, no GPU needed).
# Without apt-get and dpkg (not Debian/Ubuntu) it says so and does nothing. When packages are
# missing and cannot be installed here, it stops at once (exit 1) with the exact command to run.
set -euo pipefail

check_only=0
if [ "${1:-}" = "--check" ]; then check_only=1; shift; fi
case "${1:-}" in
    demo) pkgs="libgomp1" ;;
    test) pkgs="libgomp1 libusb-1.0-0 libgl1 libegl1 libvulkan1 mesa-vulkan-drivers" ;;
    *) echo "usage: $0 [--check] demo|test" >&2; exit 2 ;;
esac

if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "system packages: not a Debian/Ubuntu system (no dpkg/apt-get); make sure these libraries" \
         "are installed: $pkgs" >&2
    exit 0
fi

missing=""
for p in $pkgs; do
    status="$(dpkg -s "$p" 2>/dev/null || true)"
    case "$status" in *"Status: install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
missing="${missing# }"
[ -z "$missing" ] && exit 0

line="apt-get install -y --no-install-recommends $missing"
if [ "$check_only" = 1 ]; then
    echo "missing system packages: $missing; install them with: sudo $line" >&2
    exit 1
fi
if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo"
else
    echo "missing system packages: $missing; install them with: sudo apt-get update && sudo $line" >&2
    exit 1
fi
echo "installing system packages: $missing" >&2
as_root() { if [ -n "$sudo" ]; then sudo "$@"; else "$@"; fi; }
if ! as_root apt-get update -qq || \
        ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; then
    echo "could not install system packages: $missing; install them with: sudo apt-get update && sudo $line" >&2
    exit 1
fi
