#!/usr/bin/env bash
# Runs every test Bagui has, installing first what the tests need. `.ci/run` calls this too.
#
#   ./test.sh                 build, unit + end-to-end tests, fuzz smoke run
#   BAGUI_FUZZ_SECONDS=600 ./test.sh    a longer fuzz run
set -euo pipefail
cd "$(dirname "$0")"

fail() { echo "test.sh: $*" >&2; exit 1; }
command -v cargo >/dev/null || fail "cargo is required (install Rust with rustup)"
command -v kill >/dev/null || fail "kill (procps) is required by the CLI tests"

# Test tools. Missing ones are installed; if that fails the run fails — nothing is skipped.
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked \
    || fail "could not install cargo-nextest"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked \
    || fail "could not install cargo-fuzz"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal \
    || fail "could not install the nightly toolchain (cargo fuzz needs it)"

# One build of everything (the end-to-end tests run the real binaries), then the tests.
cargo build --workspace --all-targets --locked
cargo nextest run --workspace --locked --no-fail-fast

# Fuzz smoke run of the frame/message decoder (bounded).
seconds="${BAGUI_FUZZ_SECONDS:-30}"
(cd fuzz && cargo +nightly fuzz run frame_decoder -- -max_total_time="$seconds" -rss_limit_mb=1024 2>&1 | tail -n 3)
echo "fuzz: frame_decoder ran ${seconds}s without a finding"
