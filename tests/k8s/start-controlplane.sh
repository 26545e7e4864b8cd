#!/usr/bin/env bash
# start-controlplane.sh — etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok,
# all on 127.0.0.1, no kubelet, no docker. Flags and their sources: NOTES.md.
# Binaries: BIN=$(tests/k8s/build.sh).
#
#   ./start-controlplane.sh         start everything (idempotent-ish), wait for /readyz, create a kwok node
#   ./start-controlplane.sh stop    stop what this script started (by the pids it recorded)
#
# Env: BIN=./bin STATE=./state PKI=./pki APISERVER_PORT=6443 ETCD_CLIENT_PORT=2379 ETCD_PEER_PORT=2380
#      ETCD=<path to etcd binary; default $BIN/etcd, else /usr/bin/etcd from Debian's etcd-server>
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="${BIN:-$HERE/bin}"; STATE="${STATE:-$HERE/state}"; PKI="${PKI:-$HERE/pki}"
APISERVER_PORT="${APISERVER_PORT:-6443}"
ETCD_CLIENT_PORT="${ETCD_CLIENT_PORT:-2379}"; ETCD_PEER_PORT="${ETCD_PEER_PORT:-2380}"
SERVICE_CIDR="${SERVICE_CIDR:-10.96.0.0/16}"
mkdir -p "$STATE/logs" "$STATE/pids"

stop_all() {
  for c in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    f="$STATE/pids/$c.pid"
    if [ -s "$f" ]; then
      pid="$(cat "$f")"
      if kill -0 "$pid" 2>/dev/null; then kill "$pid"; echo "stopped $c ($pid)"; fi
      rm -f "$f"
    fi
  done
}
if [ "${1:-}" = stop ]; then stop_all; exit 0; fi

start() { # name, then command...
  local name="$1"; shift
  local f="$STATE/pids/$name.pid"
  if [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then echo "$name already running"; return; fi
  "$@" >"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$f"; echo "started $name (pid $!), log $STATE/logs/$name.log"
}

[ -s "$PKI/admin.kubeconfig" ] || PORT="$APISERVER_PORT" "$HERE/gen-pki.sh" "$PKI"
[ -s "$HERE/kwok/kwok.yaml" ] || "$HERE/gen-kwok-config.sh"
TOKEN="$(cut -d, -f1 "$PKI/tokens.csv")"
KCFG="$PKI/admin.kubeconfig"
ETCD="${ETCD:-$BIN/etcd}"; [ -x "$ETCD" ] || ETCD=/usr/bin/etcd
ETCD_EXTRA=()
# --unsafe-no-fsync is a 3.5+ flag; Debian bookworm's etcd-server is 3.4.23
ETCD_HELP="$("$ETCD" --help 2>&1 || true)"
case "$ETCD_HELP" in *--unsafe-no-fsync*) ETCD_EXTRA+=(--unsafe-no-fsync=true) ;; esac

start etcd "$ETCD" \
  --name=default --data-dir="$STATE/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="default=http://127.0.0.1:$ETCD_PEER_PORT" \
  --auto-compaction-retention=1 --quota-backend-bytes=2147483648 \
  --log-level=warn "${ETCD_EXTRA[@]}"
for _ in $(seq 1 60); do curl -sf "http://127.0.0.1:$ETCD_CLIENT_PORT/health" >/dev/null && break; sleep 0.5; done

start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --token-auth-file="$PKI/tokens.csv" \
  --authorization-mode=RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --endpoint-reconciler-type=none \
  --disable-admission-plugins=ServiceAccount \
  --allow-privileged=true --profiling=false \
  --cert-dir="$STATE/apiserver-certs" \
  --v=1
for i in $(seq 1 120); do
  curl -sf --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null && break
  [ "$i" = 120 ] && { echo "kube-apiserver not ready; see $STATE/logs/kube-apiserver.log" >&2; exit 1; }
  sleep 1
done

start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$KCFG" \
  --leader-elect=false --use-service-account-credentials=false \
  --controllers='*' \
  --secure-port=0 \
  --root-ca-file="$PKI/ca.crt" \
  --service-account-private-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --v=1

start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig="$KCFG" --leader-elect=false --secure-port=0 --v=1

start kwok "$BIN/kwok" \
  --kubeconfig="$KCFG" --config="$HERE/kwok/kwok.yaml" --manage-all-nodes=true

# the fake node kwok keeps Ready; pods scheduled onto it become Running and Ready
"$BIN/kubectl" --kubeconfig "$KCFG" apply -f "$HERE/kwok/node.yaml" >/dev/null
"$BIN/kubectl" --kubeconfig "$KCFG" wait --for=condition=Ready node --all --timeout=120s >/dev/null
echo "control plane ready: export KUBECONFIG=$KCFG"
