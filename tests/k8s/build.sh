#!/usr/bin/env bash
# build.sh — builds the local control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, etcdctl, kwok, helm and helm-docs) from the Go module proxy into a
# versioned cache dir, with the CRDs of prometheus-operator and KEDA (from their Go modules) under
# crds/, and prints that dir. What is already there is kept, so reruns take a second.
#
#   BIN=$(tests/k8s/build.sh)      # progress goes to stderr
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
KV=v1.36.3 ETCDV=v3.6.16 KWOKV=v0.8.0 HELMV=v3.22.0 HELMDOCSV=v1.14.2
# the monitoring and autoscaling CRDs the chart's objects and docs/examples are checked against
PROMOPV=v0.85.0 KEDAV=v2.21.0
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
  LDF="-s -w" MINOR="${KV#v1.}"; MINOR="${MINOR%%.*}"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDF+=" -X $p.gitVersion=$KV -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean"
  done
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
# helm's Makefile sets its default Kubernetes version (what `helm template` and `helm lint`
# assume without a cluster) from its client-go, 0.37 -> 1.37; `go install` alone would leave 1.20
HELMSTAMP="$BIN/.helm-$HELMV-k8s1.37"
if need helm || [ ! -f "$HELMSTAMP" ]; then
  say "building helm $HELMV (renders charts/meshchat in the tests)"
  HL="-s -w -X helm.sh/helm/v3/internal/version.version=$HELMV"
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    HL+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=37"
  done
  GOBIN="$BIN" nice -n 10 go install -trimpath -ldflags="$HL" "helm.sh/helm/v3/cmd/helm@$HELMV"
  touch "$HELMSTAMP"
fi
if need helm-docs; then
  say "building helm-docs $HELMDOCSV (the chart's README is generated from its values)"
  GOBIN="$BIN" nice -n 10 go install -trimpath -ldflags="-s -w" "github.com/norwoodj/helm-docs/cmd/helm-docs@$HELMDOCSV"
fi
crds() { # module@version, dir in the module, destination
  [ -n "$(ls "$BIN/crds/$3" 2>/dev/null)" ] && return 0
  say "fetching the CRDs of $1"
  local dir
  dir=$(cd "$BIN" && go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir/$2" ] || { say "no $2 in $1"; exit 1; }
  mkdir -p "$BIN/crds/$3.tmp" && cp "$dir/$2"/*.yaml "$BIN/crds/$3.tmp/" && mv "$BIN/crds/$3.tmp" "$BIN/crds/$3"
}
crds "github.com/prometheus-operator/prometheus-operator@$PROMOPV" example/prometheus-operator-crd monitoring
crds "github.com/kedacore/keda/v2@$KEDAV" config/crd/bases keda
echo "$BIN"
