#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for bpfs: the FUSE 3 library and fusermount3,
# samtools, tabix, rsync and getfattr (the demo's and the tests' tools), a venv in .venv with bpfs.
# Run as root or as a user with sudo. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null; then
  need=""
  for pkg in fuse3 libfuse3-3 samtools tabix rsync attr python3-venv; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
  done
  if [ -n "$need" ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends $need >/dev/null
  fi
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test]'
echo "bpfs is set up: .venv/bin/bpfs --help"
