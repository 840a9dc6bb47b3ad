#!/usr/bin/env bash
# Builds the real control plane the end-to-end suite runs against — kube-apiserver and
# kube-scheduler from k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3, kwok from
# sigs.k8s.io/kwok — from the Go modules pinned in the three wrapper modules beside this script.
#
# Binaries land in a cache folder keyed by the pinned versions and are not rebuilt when present:
#   ${STRATA_CONTROL_PLANE_CACHE:-$HOME/.cache/strata/control-plane}/<key>/bin
# Prints that bin folder on the last line of stdout. Needs only `go` (1.25+) and the module proxy.
#
# Usage: build.sh [--print-bin-dir]   (--print-bin-dir prints where the binaries go, builds nothing)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

version_of() { # module path, wrapper dir
  awk -v m="$1" '$1 == "require" {$1 = ""; $0 = $0} $1 == m && $2 ~ /^v/ {print $2; exit}' "$here/$2/go.mod"
}
k8s_version="$(version_of k8s.io/kubernetes kubernetes)"
etcd_version="$(version_of go.etcd.io/etcd/server/v3 etcd)"
kwok_version="$(version_of sigs.k8s.io/kwok kwok)"
if [ -z "$k8s_version" ] || [ -z "$etcd_version" ] || [ -z "$kwok_version" ]; then
  echo "build.sh: could not read the pinned versions from the wrapper go.mod files" >&2
  exit 2
fi
# The key covers the go.mod contents too, so changing a replace line rebuilds.
sum="$(cat "$here"/*/go.mod | sha256sum | cut -c1-12)"
key="k8s-${k8s_version}_etcd-${etcd_version}_kwok-${kwok_version}_${sum}"
cache="${STRATA_CONTROL_PLANE_CACHE:-$HOME/.cache/strata/control-plane}"
bin="$cache/$key/bin"

if [ "${1:-}" = "--print-bin-dir" ]; then
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: no 'go' on PATH; the real control plane cannot be built here" >&2
  exit 3
fi

mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false} -mod=readonly"

build() { # wrapper dir, output name, package, extra flags...
  local dir="$1" name="$2" pkg="$3"
  shift 3
  if [ -x "$bin/$name" ]; then
    echo "build.sh: $name is cached ($bin/$name)" >&2
    return
  fi
  echo "build.sh: building $name from $pkg ..." >&2
  local start=$SECONDS
  (cd "$here/$dir" && go build -trimpath -o "$bin/$name.tmp" "$@" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  echo "build.sh: built $name in $((SECONDS - start)) s" >&2
}

# Upstream's version ldflags, so the binaries report the pinned version instead of v0.0.0-master.
k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${k8s_version} \
-X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$(echo "$k8s_version" | cut -d. -f2) \
-X k8s.io/client-go/pkg/version.gitVersion=${k8s_version}"

build etcd etcd go.etcd.io/etcd/server/v3 -ldflags "-s -w"
build kubernetes kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver -tags selinux,notest -ldflags "$k8s_ldflags"
build kubernetes kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler -tags selinux,notest -ldflags "$k8s_ldflags"
build kwok kwok sigs.k8s.io/kwok/cmd/kwok -ldflags "-s -w"

# kwok (v0.8+) refuses to start without Stage objects: copy the ones its module ships.
stages="$cache/$key/kwok-stages"
if [ ! -f "$stages/.done" ]; then
  kwok_dir="$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  mkdir -p "$stages"
  for s in node-initialize node-heartbeat-with-lease pod-ready pod-complete pod-delete; do
    f="$(find "$kwok_dir/kustomize/stage" -path "*fast*" -name "$s.yaml" | head -n1)"
    [ -n "$f" ] || f="$(find "$kwok_dir/kustomize/stage" -name "$s.yaml" | head -n1)"
    if [ -n "$f" ]; then cp "$f" "$stages/$s.yaml"; fi
  done
  touch "$stages/.done"
fi

echo "$bin"
