#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need (Debian's
# Chromium, Python clients in a venv), builds sluice, runs the Rust tests and the
# end-to-end tests against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

step "system packages (chromium for the dashboard tests, strace for the ack-after-fsync test, curl for the HTTPS test, prometheus and promtool for the monitoring test; make, pkg-config and libssl-dev to build librdkafka for the cluster client)"
if ! command -v chromium >/dev/null 2>&1 || ! command -v strace >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1 \
  || ! command -v make >/dev/null 2>&1 || ! command -v pkg-config >/dev/null 2>&1 || ! dpkg -s libssl-dev >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq chromium strace curl make pkg-config libssl-dev >/dev/null
  as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
chromium --version
promtool --version 2>&1 | sed -n 1p

step "python test clients (.venv)"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --disable-pip-version-check -r tests/e2e/requirements.txt

step "build (release)"
cargo build --release --locked

step "rust tests (the S3 ones against moto_server from .venv)"
SLUICE_REQUIRE_S3_TESTS=1 cargo test --release --locked --workspace

step "end-to-end tests (real binary, real clients, real browser)"
E2E_SLUICE_BIN="$PWD/target/release/sluice" .venv/bin/python -m pytest -q -p no:cacheprovider tests/e2e
