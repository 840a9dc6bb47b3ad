#!/usr/bin/env bash
# Regenerates the Go code of the plugin protocol (pluginv1/*.pb.go) from
# proto/strata/plugin/v1/plugin.proto, without protoc: the .proto is
# compiled by protocompile (tools/protogen) and handed to protoc-gen-go and
# protoc-gen-go-grpc, built here at pinned versions. The output is committed;
# `generate.sh --check` fails when it is not current (CI runs that).
set -euo pipefail
cd "$(dirname "$0")"
PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1

bin=$(mktemp -d)
out=$(mktemp -d)
trap 'rm -rf "$bin" "$out"' EXIT
GOBIN=$bin go install "$PROTOC_GEN_GO"
GOBIN=$bin go install "$PROTOC_GEN_GO_GRPC"
(cd tools && go run ./protogen -proto ../../../proto -out "$out" -plugins "$bin" \
    strata/plugin/v1/plugin.proto >/dev/null)

if [[ "${1:-}" == "--check" ]]; then
    if ! diff -r "$out/pluginv1" pluginv1 >/dev/null; then
        diff -r "$out/pluginv1" pluginv1 | head -40 >&2 || true
        echo "sdk/go/pluginv1 is not current: run sdk/go/generate.sh and commit" >&2
        exit 1
    fi
    echo "sdk/go/pluginv1 is current"
else
    rm -rf pluginv1
    cp -r "$out/pluginv1" pluginv1
    echo "wrote sdk/go/pluginv1"
fi
