#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz / libFuzzer) of the parsers that take untrusted input:
# LTX decoder and encoder, WAL scanner, configuration keys, replica URLs (fuzz/, README "Fuzzing").
#
#   scripts/fuzz.sh [SECONDS]        each target for SECONDS (default 30), one after the other
#   scripts/fuzz.sh 0                replay the seeds (and the local corpus) only: a regression run
#   FUZZ_TARGETS="url wal_scan" scripts/fuzz.sh 600      a longer run of some targets
#
# 1. installs what is missing: the nightly toolchain (rustup, minimal profile) and cargo-fuzz
#    (`cargo install`, into ~/.cargo/bin);
# 2. checks that the fuzz crate locks the same versions of the parsers' dependencies as the
#    main crate (it compiles the main crate's own src/ltx, src/wal.rs, src/config);
# 3. builds every target once (release, debug assertions and overflow checks on, no sanitizer:
#    the code under test is safe Rust, AddressSanitizer would only halve the speed);
# 4. runs each target for SECONDS on one core (libFuzzer's default: one process, one thread),
#    from its seeds in git (fuzz/seeds/TARGET, plus tests/fixtures/ltx for ltx_decode) and the
#    working corpus fuzz/corpus/TARGET (not in git; it grows across local runs);
# 5. exits non-zero if a target found anything (a panic, an overflow, a timeout, memory
#    exhaustion) and prints where the reproducer is and how to replay and minimize it.
#    Fixed findings go into fuzz/seeds/TARGET/regress-* and get a unit test in the crate.
#
# Knobs: FUZZ_TARGETS (default: all), FUZZ_ARGS (more libFuzzer flags), CARGO_FUZZ_VERSION.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ=$REPO/fuzz
SECONDS_PER_TARGET=${1:-30}
# The version scripts/fuzz.sh was written against; --locked keeps its dependency tree fixed.
CARGO_FUZZ_VERSION=${CARGO_FUZZ_VERSION:-0.13.2}
# One input may take at most this long (a 2 MiB generated WAL is scanned ~20 times: well below).
INPUT_TIMEOUT_S=25
# libFuzzer's own limit, stated: an input needing more is a finding (unbounded allocation).
RSS_LIMIT_MB=2048
BUILD_FLAGS=(--release --debug-assertions --sanitizer none)

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

case $SECONDS_PER_TARGET in
  '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------- 1. tools
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "installing the nightly toolchain (rustup, minimal profile)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into ~/.cargo/bin"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
echo "$(cargo +nightly --version); $(cargo +nightly fuzz --version)"

# ---------------------------------------------------------------- 2. same dependency versions
locked() { # LOCKFILE CRATE -> version
  awk -v n="name = \"$2\"" '$0 == n { getline; gsub(/version = |"/, ""); print; exit }' "$1"
}
for crate in lz4_flex crc crc-catalog serde_json; do
  main=$(locked "$REPO/Cargo.lock" "$crate")
  fuzz=$(locked "$FUZZ/Cargo.lock" "$crate")
  if [ "$main" != "$fuzz" ]; then
    echo "fuzz/Cargo.lock has $crate $fuzz, Cargo.lock has $main: the fuzzers would test other" \
      "code than the extension runs. Fix: (cd fuzz && cargo update -p $crate --precise $main)" >&2
    exit 1
  fi
done

# ---------------------------------------------------------------- 3. build
cd "$FUZZ"
T0=$(now)
cargo +nightly fuzz build "${BUILD_FLAGS[@]}"
echo "=== fuzz build: $(since "$T0")s"

# The dictionary of the text targets, from the key table and the shared odd inputs.
DICT=$FUZZ/target/config.dict
mkdir -p "$FUZZ/target"
python3 "$FUZZ/make_dict.py" "$DICT"

# ---------------------------------------------------------------- 4. run
read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo +nightly fuzz list | tr '\n' ' ')}"
read -r -a extra_args <<<"${FUZZ_ARGS:-}"
failed=()
for t in "${targets[@]}"; do
  corpus=(corpus/$t)
  # A target may have no seeds of its own in git (ltx_decode's are the LTX fixtures).
  [ -d "seeds/$t" ] && corpus+=("seeds/$t")
  [ "$t" = ltx_decode ] && corpus+=("$REPO/tests/fixtures/ltx")
  args=(-timeout=$INPUT_TIMEOUT_S -rss_limit_mb=$RSS_LIMIT_MB)
  # 0 seconds: replay the seeds and the corpus once, mutate nothing (libFuzzer reads
  # -max_total_time=0 as "no limit").
  if [ "$SECONDS_PER_TARGET" = 0 ]; then args+=(-runs=0); else args+=(-max_total_time="$SECONDS_PER_TARGET"); fi
  case $t in config_keys | url) args+=(-dict="$DICT") ;; esac
  mkdir -p "corpus/$t" "artifacts/$t"
  before=$(ls "artifacts/$t" | wc -l)
  log=$(mktemp "${TMPDIR:-/tmp}/fuzz-$t.XXXXXX.log")
  T0=$(now)
  set +e
  cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "$t" "${corpus[@]}" -- "${args[@]}" "${extra_args[@]}" \
    >"$log" 2>&1
  rc=$?
  set -e
  stats=$(grep -a 'DONE' "$log" | tail -1 | sed -E 's/.*DONE +//' || true)
  new=$(ls -t "artifacts/$t" | head -n $(( $(ls "artifacts/$t" | wc -l) - before )))
  if [ $rc -eq 0 ] && [ -z "$new" ]; then
    echo "=== $t: ok in $(since "$T0")s ($stats)"
    rm -f "$log"
    continue
  fi
  failed+=("$t")
  echo "=== $t: FAILED (exit $rc) after $(since "$T0")s; log $log"
  grep -a -m1 -A4 -E "panicked at|ERROR: libFuzzer" "$log" || tail -20 "$log"
  for a in $new; do
    echo "    reproducer: $FUZZ/artifacts/$t/$a"
    echo "    replay:     (cd fuzz && cargo +nightly fuzz run ${BUILD_FLAGS[*]} $t artifacts/$t/$a)"
    echo "    minimize:   (cd fuzz && cargo +nightly fuzz tmin ${BUILD_FLAGS[*]} $t artifacts/$t/$a)"
  done
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${SECONDS_PER_TARGET}s each, nothing found"
