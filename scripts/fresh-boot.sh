#!/usr/bin/env bash
# Run a command as if the machine had booted SECONDS ago (default 30): in a Linux time
# namespace whose CLOCK_MONOTONIC (and CLOCK_BOOTTIME) is shifted back, so time.monotonic()
# reads about SECONDS. A container started a minute ago sees such a clock; code that compares
# it with 0.0 as "long ago" misbehaves there (see docs/design.md, "Clocks").
#
# Usage: scripts/fresh-boot.sh [-s SECONDS] COMMAND [ARGS...]
# Needs util-linux's unshare and the right to create a time namespace (root, or a user namespace).
set -euo pipefail
seconds=30
if [[ "${1:-}" == "-s" ]]; then seconds=$2; shift 2; fi
[[ $# -gt 0 ]] || { echo "usage: $0 [-s SECONDS] COMMAND [ARGS...]" >&2; exit 2; }
uptime=$(cut -d. -f1 /proc/uptime)
shift_by=$(( uptime > seconds ? uptime - seconds : 0 ))
exec unshare --fork --time --monotonic "-$shift_by" --boottime "-$shift_by" "$@"
