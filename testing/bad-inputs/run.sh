#!/usr/bin/env bash
# Runs every case under cases/ against a built `strata` binary and
# classifies each one:
#   crash  - exit code >= 101 (panic, signal, or the 20 s timeout: 124) or
#            "panicked" on stderr
#   clear  - a non-zero exit or a warning line, and the output names the
#            case's expected keyword
#   silent - anything else (accepted without a word, or refused without
#            naming what is wrong)
# Usage: testing/bad-inputs/run.sh [PATH-TO-STRATA]   (default target/debug/strata)
# Exit status: 1 when any case crashed, else 0 (silent cases do not fail it).
# Set BAD_INPUTS_VERBOSE=1 to print each case's whole output.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/strata}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
if [ ! -x "$bin" ]; then
  echo "no strata binary at $bin (build it with: cargo build -p strata-cli)" >&2
  exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A header line `# NAME: value` of a case file (first match only).
header() { sed -n "s/^# $2: \{0,1\}//p" "$1" | head -n 1; }

tried=0 clear=0 crash=0 silent=0
crashes=() silents=()
printf '%-44s %-6s %4s  %s\n' CASE KIND EXIT MESSAGE
for f in "$here"/cases/*.yaml; do
  name="$(basename "$f" .yaml)"
  expect="$(header "$f" expect)"
  cmd="$(header "$f" cmd)"
  args="$(header "$f" args)"
  # Extra arguments: words split as the shell would, quotes honoured.
  eval "extra=($args)"
  case "$cmd" in
    check-config) argv=(check-config "$f" "${extra[@]}") ;;
    simulate)     argv=(simulate --quiet "$f" "${extra[@]}") ;;
    run)          argv=(run --kubeconfig /nonexistent/kubeconfig --config "$f" "${extra[@]}") ;;
    *) echo "$name: unknown '# cmd: $cmd'" >&2; exit 2 ;;
  esac
  (cd "$work" && env -u RUST_LOG timeout 20 "$bin" "${argv[@]}" \
      >"$work/out" 2>"$work/err" </dev/null)
  rc=$?
  tried=$((tried + 1))
  # The case's own file name must not count as naming the problem.
  sed -i "s|[^ :]*$name\.yaml|CASE|g" "$work/out" "$work/err"
  # The message: the first error or warning line, else the first stderr
  # line, else the first line of the report.
  msg="$(grep -m1 -iE 'error|warn|panicked' "$work/err")"
  [ -n "$msg" ] || msg="$(grep -m1 . "$work/err")"
  [ -n "$msg" ] || msg="$(grep -m1 . "$work/out")"
  # Strip terminal colours.
  msg="$(printf '%s' "$msg" | sed 's/\x1b\[[0-9;]*m//g')"
  warned=0
  grep -qiE '(^| )WARN|warning' "$work/err" && warned=1
  named=0
  [ -n "$expect" ] && grep -qiF -- "$expect" "$work/err" "$work/out" && named=1
  # The report on stdout naming the problem counts for simulate cases
  # marked `# report: yes` (a pod's unschedulable reason, say).
  reported=0
  if [ "$(header "$f" report)" = yes ] && [ -n "$expect" ] && grep -qiF -- "$expect" "$work/out"; then
    reported=1
    [ "$rc" -eq 0 ] && msg="$(grep -m1 -iF -- "$expect" "$work/out" | sed 's/^ *//')"
  fi
  if [ "$rc" -ge 101 ] || grep -q panicked "$work/err"; then
    kind=crash; crash=$((crash + 1)); crashes+=("$name")
    [ "$rc" = 124 ] && msg="timed out after 20 s; $msg"
  elif { [ "$rc" -ne 0 ] || [ "$warned" = 1 ] || [ "$reported" = 1 ]; } && [ "$named" = 1 ]; then
    kind=clear; clear=$((clear + 1))
  else
    kind=silent; silent=$((silent + 1)); silents+=("$name")
  fi
  printf '%-44s %-6s %4s  %.150s\n' "$name" "$kind" "$rc" "$msg"
  if [ -n "${BAD_INPUTS_VERBOSE:-}" ]; then
    sed 's/^/    err| /' "$work/err" | head -n 20
    sed 's/^/    out| /' "$work/out" | head -n 40
  fi
done
echo
printf 'tried %d  clear %d  crash %d  silent %d\n' "$tried" "$clear" "$crash" "$silent"
[ "${#crashes[@]}" -eq 0 ] || echo "crash: ${crashes[*]}"
[ "${#silents[@]}" -eq 0 ] || echo "silent: ${silents[*]}"
[ "$crash" -eq 0 ]
