#!/usr/bin/env bash
# System packages the code sandbox uses (idempotent; a no-op when everything is present).
#   - bubblewrap (`bwrap`): the strongest sandbox mode. util-linux's `unshare` (the fallback) ships with Debian/Ubuntu.
#   - On kernels that restrict unprivileged user namespaces (Ubuntu >= 23.10 with AppArmor:
#     kernel.apparmor_restrict_unprivileged_userns=1), bwrap and unshare cannot isolate and the sandbox falls back to
#     its weakest mode. Changing that sysctl is a machine-wide security decision, so this script only does it when
#     asked: pass --allow-userns or set ONLINE_RL_ALLOW_USERNS=1 (sensible on a throwaway CI runner).
# Needs root (or sudo) to install; prints what it did and what is missing.
set -euo pipefail

ALLOW_USERNS="${ONLINE_RL_ALLOW_USERNS:-0}"
for arg in "$@"; do
    case "$arg" in
        --allow-userns) ALLOW_USERNS=1 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (accepted: --allow-userns)" >&2; exit 2 ;;
    esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="__none__"; fi
fi

if command -v bwrap >/dev/null 2>&1; then
    echo "[system-deps] bubblewrap present: $(bwrap --version)"
elif ! command -v apt-get >/dev/null 2>&1; then
    echo "[system-deps] no apt-get here: install bubblewrap with your package manager" >&2
elif [ "$SUDO" = "__none__" ]; then
    echo "[system-deps] bubblewrap missing and not root (no sudo): run as root to install it" >&2
else
    echo "[system-deps] installing bubblewrap"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap
    echo "[system-deps] installed: $(bwrap --version)"
fi

command -v unshare >/dev/null 2>&1 || echo "[system-deps] note: 'unshare' (util-linux) not found; no fallback mode" >&2

RESTRICT=/proc/sys/kernel/apparmor_restrict_unprivileged_userns
if [ -r "$RESTRICT" ] && [ "$(cat "$RESTRICT")" = "1" ]; then
    if [ "$ALLOW_USERNS" = "1" ] && [ "$SUDO" != "__none__" ]; then
        echo "[system-deps] allowing unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=0)"
        $SUDO sysctl -q -w kernel.apparmor_restrict_unprivileged_userns=0
    else
        echo "[system-deps] warning: unprivileged user namespaces are restricted by AppArmor; the sandbox will" \
             "fall back to mode 'none'. Rerun with --allow-userns to lift the restriction." >&2
    fi
fi

if command -v bwrap >/dev/null 2>&1; then
    # The sandbox runs bwrap as an unprivileged uid when started by root; check that path, not root's.
    probe=(bwrap --unshare-user --unshare-pid --unshare-net --ro-bind / / --proc /proc --dev /dev true)
    if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null 2>&1; then
        probe=(setpriv --reuid=65534 --regid=65534 --clear-groups "${probe[@]}")
    fi
    if "${probe[@]}" 2>/dev/null; then
        echo "[system-deps] bubblewrap sandbox works"
    else
        echo "[system-deps] warning: bubblewrap is installed but cannot create namespaces here" >&2
    fi
fi
