#!/usr/bin/env bash
# Builds the test extender (main.go, from k8s.io/kube-scheduler/extender/v1 as pinned in go.mod)
# into a cache folder keyed by the sources, and prints the binary's path on the last line.
# Not rebuilt when present:
#   ${STRATA_EXTENDER_GO_CACHE:-$HOME/.cache/strata/extender-go}/<key>/extender-go
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ -d /usr/local/go/bin ] && export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null 2>&1; then
  echo "extender-go/build.sh: no 'go' on PATH" >&2
  exit 3
fi
key="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-12)"
out="${STRATA_EXTENDER_GO_CACHE:-$HOME/.cache/strata/extender-go}/$key"
if [ ! -x "$out/extender-go" ]; then
  mkdir -p "$out"
  echo "extender-go/build.sh: building ..." >&2
  (cd "$here" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false} -mod=readonly" \
    go build -trimpath -o "$out/extender-go.tmp" .)
  mv "$out/extender-go.tmp" "$out/extender-go"
fi
echo "$out/extender-go"
