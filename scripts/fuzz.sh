#!/usr/bin/env bash
# make fuzz: each cargo-fuzz target (fuzz/fuzz_targets) for FUZZ_SECS seconds, from the checked-in
# seeds plus a corpus kept under ~/.cache. Installs the nightly toolchain and cargo-fuzz when
# missing. A crash leaves its input in fuzz/artifacts/<target>/: copy it to
# fuzz/regressions/<target>/ (the unit tests replay those on stable) and fix the cause.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECS:-60}
cache=${MESHCHAT_CACHE:-$HOME/.cache/meshchat}
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "==> installing the nightly toolchain (cargo fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
  echo "==> installing cargo-fuzz from crates.io (first time: a few minutes)"
  cargo install cargo-fuzz --locked
fi
echo "==> building the fuzz targets (first time: several minutes, librdkafka included)"
(cd fuzz && cargo +nightly fuzz build -O --target-dir "$cache/fuzz-target")
status=0
for target in $(cd fuzz && cargo +nightly fuzz list); do
  corpus="$cache/fuzz-corpus/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  echo "==> fuzzing $target for ${secs}s"
  if (cd fuzz && cargo +nightly fuzz run "$target" -O --target-dir "$cache/fuzz-target" \
        "$corpus" "seeds/$target" -- -max_total_time="$secs" -artifact_prefix="artifacts/$target/" \
        -print_final_stats=1) > "$cache/fuzz-$target.log" 2>&1; then
    grep -E '^Done|stat::number_of_executed_units' "$cache/fuzz-$target.log" | head -2 | sed "s/^/    /"
  else
    status=1
    echo "!!! $target found a crash: input in fuzz/artifacts/$target/, log $cache/fuzz-$target.log"
    grep -E 'panicked|SUMMARY' "$cache/fuzz-$target.log" | head -5 | sed "s/^/    /"
  fi
done
exit $status
