#!/usr/bin/env bash
# Run each fuzz target in fuzz/ for SECONDS (default 15): the proxy's own HTTP/1 request-head parser, its
# response-head writer, and its backend-answer reader with the body framing (docs/http1.md,
# docs/backends.md). cargo-fuzz needs the nightly toolchain; both are installed when missing (rustup, cargo).
# A crash stops the run, names the input saved under fuzz/artifacts/, and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "--- installing the nightly toolchain (for cargo-fuzz)"
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "--- installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build
for target in $(cargo +nightly fuzz list); do
  echo "--- fuzz $target for ${seconds} s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$seconds"
done
