#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after
# another, and fails if any of them finds a crash.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 30 s, all targets)
#
# Needs the nightly toolchain (`rustup toolchain install nightly`). Installs
# cargo-fuzz at the version pinned below into $STRATA_TOOLS_CACHE
# (~/.cache/strata/tools) the first time. Each target starts from its seed
# corpus, fuzz/corpus/TARGET (read only), and adds what it finds to
# fuzz/work/TARGET (not under version control); a crash is saved under
# fuzz/artifacts/TARGET/ and the script prints the command that replays it.
#
# One libFuzzer process at a time, on one thread (no -jobs/-workers: the
# default runs in this process), so it can share a small machine.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds="${1:-30}"
shift || true
case "$seconds" in
  '' | *[!0-9]*)
    echo "usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
    ;;
esac

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: cargo fuzz needs the nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi

tools="${STRATA_TOOLS_CACHE:-$HOME/.cache/strata/tools}"
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools"
  cargo install --quiet --root "$tools" cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
export PATH="$tools/bin:$PATH"

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Release with debug assertions and overflow checks, AddressSanitizer
# (cargo-fuzz's defaults); 16 codegen units build the large dependency
# tree faster than cargo-fuzz's 1, for little speed lost. The build goes to
# a cache outside the work tree, shared by every clone on the machine (a
# first build takes about 14 minutes on 2 cores, a later one the changed
# crates only).
target_dir="${STRATA_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/strata/fuzz-target}"
build=(--codegen-units 16 --target-dir "$target_dir")
echo "== cargo fuzz build (${#targets[@]} targets)"
start=$SECONDS
cargo +nightly fuzz build "${build[@]}"
echo "built in $((SECONDS - start)) s"
# The binaries just built are run directly (what `cargo fuzz run` does after
# building again): the fuzzed code is the code that was built, even if the
# sources change meanwhile.
host="$(rustc +nightly -vV | sed -n 's/^host: //p')"
bin="$target_dir/$host/release"

# Leaks are not what these targets look for: the engine interns strings
# and leaks plugin reason strings on purpose (they live as long as the
# process), which LeakSanitizer would report on any input that configures
# a plugin, during the run and again at exit. No ODR check, as cargo fuzz
# run sets.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0:detect_odr_violation=0"

failed=()
for t in "${targets[@]}"; do
  seeds="fuzz/corpus/$t"
  work="fuzz/work/$t"
  artifacts="fuzz/artifacts/$t"
  if [ ! -d "$seeds" ]; then
    echo "fuzz/run.sh: no seed corpus $seeds for target $t" >&2
    exit 1
  fi
  mkdir -p "$work" "$artifacts"
  echo "== $t: ${seconds} s"
  log="$(mktemp)"
  if "$bin/$t" -artifact_prefix="$artifacts/" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -detect_leaks=0 -print_final_stats=1 "$work" "$seeds" \
    >"$log" 2>&1; then
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+.*DONE' "$log" |
      sed "s/^/  $t: /" || true
  else
    tail -n 60 "$log"
    echo "FAILED: fuzz target $t crashed; the input is in $artifacts/ (see above)."
    echo "  replay: $bin/$t $artifacts/<file>"
    echo "     (or: cargo +nightly fuzz run ${build[*]} $t $artifacts/<file>)"
    failed+=("$t")
  fi
  rm -f "$log"
done

passed=$((${#targets[@]} - ${#failed[@]}))
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]}"
  echo "fuzz: $passed passed, ${#failed[@]} failed"
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds} s each, no crash"
echo "fuzz: $passed passed, 0 failed"
