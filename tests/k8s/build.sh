#!/usr/bin/env bash
# build.sh — builds the local control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, etcdctl, kwok, and helm) from the Go module proxy into a versioned cache dir and
# prints that dir. Binaries already there are kept, so reruns take a second.
#
#   BIN=$(tests/k8s/build.sh)      # progress goes to stderr
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
KV=v1.33.13 ETCDV=v3.5.21 KWOKV=v0.8.0 HELMV=v3.22.0
BIN="${K8S_BIN:-$HOME/.cache/meshchat/k8s/$KV-etcd$ETCDV-kwok$KWOKV}"
mkdir -p "$BIN"
export CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS="${GOFLAGS:--buildvcs=false}"
# downloads and compiled packages stay under ~/.cache, so a rebuild (new version) is quick
export GOMODCACHE="${GOMODCACHE_MESHCHAT:-$HOME/.cache/meshchat/go/mod}"
say() { echo "k8s: $*" >&2; }
command -v go >/dev/null || { say "go is not installed (needed to build the control plane)"; exit 1; }

need() { for b in "$@"; do [ -x "$BIN/$b" ] || return 0; done; return 1; }

if need kube-apiserver kube-controller-manager kube-scheduler kubectl; then
  say "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $KV (first time: 5-30 min on 2 cores)"
  LDF="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDF+=" -X $p.gitVersion=$KV -X $p.gitMajor=1 -X $p.gitMinor=33 -X $p.gitTreeState=clean"
  done
  LDF+=" -X k8s.io/component-base/version.buildDate=2026-06-11T00:00:00Z"
  (cd "$HERE" && nice -n 10 go build -p 2 -trimpath -tags selinux,notest -ldflags="$LDF" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
fi
if need etcd etcdctl; then
  say "building etcd $ETCDV"
  EL="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCDV"
  (cd "$HERE/etcd" && nice -n 10 go build -p 2 -trimpath -ldflags="$EL" -o "$BIN/etcd" go.etcd.io/etcd/server/v3 \
    && nice -n 10 go build -p 2 -trimpath -ldflags="$EL" -o "$BIN/etcdctl" go.etcd.io/etcd/etcdctl/v3)
fi
if need kwok; then
  say "building kwok $KWOKV"
  (cd "$HERE/kwok" && nice -n 10 go build -p 2 -trimpath -ldflags="-s -w" -o "$BIN/kwok" sigs.k8s.io/kwok/cmd/kwok)
fi
if need helm; then
  say "building helm $HELMV (renders charts/meshchat in the tests)"
  GOBIN="$BIN" nice -n 10 go install -trimpath -ldflags="-s -w" "helm.sh/helm/v3/cmd/helm@$HELMV"
fi
echo "$BIN"
