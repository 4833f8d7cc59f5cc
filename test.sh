#!/usr/bin/env bash
# Runs every test Bagui has, installing first what the tests need. `.ci/run` calls this too.
#
#   ./test.sh                            build, unit + end-to-end tests, fuzz smoke runs
#   BAGUI_FUZZ_SECONDS=600 ./test.sh     longer fuzz runs (seconds per target)
#   BAGUI_LONG_TESTS=1 ./test.sh         the long fault tests too (10-minute partition, 20
#                                        SIGKILLs of each side)
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

# Real peers the tests run: Nagios plugins, promtool and a Prometheus server, an Alertmanager,
# ss, dpkg; the console's browser test drives Chromium through chromedriver (a CJK font makes
# its screenshots legible).
debian_packages=(monitoring-plugins-basic monitoring-plugins-standard prometheus
    prometheus-alertmanager iproute2 python3 chromium chromium-driver fonts-wqy-microhei)
missing=()
for package in "${debian_packages[@]}"; do
    dpkg-query -W -f '${db:Status-Abbrev}' "$package" 2>/dev/null | grep -q '^ii' || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -q \
        && $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || fail "could not install ${missing[*]} (Debian packages the tests need)"
fi

# One build of everything (the end-to-end tests run the real binaries), then the tests.
cargo build --workspace --all-targets --locked
cargo nextest run --workspace --locked --no-fail-fast
# The foundation's end-to-end tests again on the shangmi crypto profile (SM2 certificates,
# TLS_SM4_GCM_SM3 over curveSM2): the same tests, unchanged, on the other profile.
BAGUI_TEST_CRYPTO_PROFILE=shangmi cargo nextest run -p bagui-tests --locked --no-fail-fast \
    --test enrollment --test delivery --test crash --test network --test identity

# Fuzz smoke run of every decoder (bounded: BAGUI_FUZZ_SECONDS each, 15 by default).
seconds="${BAGUI_FUZZ_SECONDS:-15}"
(
    cd fuzz
    cargo +nightly fuzz build
    for target in $(cargo +nightly fuzz list); do
        log="../target/fuzz-$target.log"
        if ! cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=1024 \
            >"$log" 2>&1; then
            tail -n 40 "$log" >&2
            echo "fuzz: $target failed; the input is in fuzz/artifacts/$target" >&2
            exit 1
        fi
        echo "fuzz: $target: $(grep -E '^Done' "$log" | tail -n 1)"
    done
)
echo "fuzz: every target ran ${seconds}s without a finding"
