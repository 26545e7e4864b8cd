#!/usr/bin/env bash
# make e2e — the operator against the cluster KUBECONFIG names (kind, k3d, or a real one).
#
# It installs the CRD, runs the operator from this checkout (out of cluster, with your
# kubeconfig), applies a ChatAgent, and checks what a user would: children and Ready pods,
# status, `kubectl scale`, a refused bad spec, deletion cascading. With workers that really run
# (E2E_WORKER_IMAGE pushed or `kind load`ed, E2E_KAFKA reachable from the pods), it also waits
# for the balancer to assign every partition and sends a chat message through the Service.
#
#   KUBECONFIG=~/.kube/config E2E_WORKER_IMAGE=meshchat/worker:dev E2E_KAFKA=kafka.kafka:9092 make e2e
#
# Env: E2E_NAMESPACE (default meshchat-e2e, created and deleted), E2E_WORKERS_RUN=1 to expect
# running workers (default: 1 when E2E_WORKER_IMAGE is set).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$HOME/.cache/meshchat/target}/debug
: "${KUBECONFIG:?set KUBECONFIG to the cluster to test (kind get kubeconfig, k3d kubeconfig write...)}"
ns=${E2E_NAMESPACE:-meshchat-e2e}
image=${E2E_WORKER_IMAGE:-}
kafka=${E2E_KAFKA:-kafka:9092}
workers_run=${E2E_WORKERS_RUN:-$([ -n "$image" ] && echo 1 || echo 0)}
kubectl=${KUBECTL:-kubectl}
name=e2e
op_pid=

step() { echo "==> $*"; }
fail() { echo "e2e: FAILED: $*" >&2; exit 1; }
cleanup() {
  [ -n "$op_pid" ] && kill "$op_pid" 2>/dev/null || true
  $kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT
wait_for() { # what, seconds, command...
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 "$secs"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  fail "$what (after ${secs}s)"
}

step "cluster: $($kubectl config current-context)"
$kubectl version >/dev/null || fail "no API server at KUBECONFIG"
step "CRD"
$kubectl apply --server-side -f "$root/crds/chatagent.crd.yaml" >/dev/null
$kubectl wait --for=condition=Established crd/chatagents.meshchat.io --timeout=60s >/dev/null
$kubectl create namespace "$ns" >/dev/null 2>&1 || true

step "operator (this checkout, out of cluster; log $root/.run/e2e-operator.log)"
mkdir -p "$root/.run"
"$bin/meshchat-operator" run --identity "e2e-$$" --lease-namespace "$ns" --listen 127.0.0.1:0 \
  >"$root/.run/e2e-operator.log" 2>&1 &
op_pid=$!

step "API keys Secret and ChatAgent $ns/$name"
token=e2e_$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')
hash=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
$kubectl -n "$ns" create secret generic "$name-api-keys" \
  --from-literal=keys.yaml="keys: [{tenant: e2e, user: e2e, role: admin, sha256: $hash}]" >/dev/null
cat <<EOF | $kubectl apply -f - >/dev/null
apiVersion: meshchat.io/v1alpha1
kind: ChatAgent
metadata: {name: $name, namespace: $ns}
spec:
  replicas: 3
  ${image:+image: $image}
  imagePullPolicy: IfNotPresent
  kafka: {bootstrapServers: "$kafka", partitions: 6, replicationFactor: ${E2E_KAFKA_REPLICAS:-1}, minInsyncReplicas: 1}
  rebalance: {intervalSeconds: 5, heartbeatTimeoutSeconds: 5}
  auth: {apiKeysSecretRef: {name: $name-api-keys, key: keys.yaml}}
EOF
wait_for "the StatefulSet" 60 $kubectl -n "$ns" get statefulset "$name"
for child in service/$name service/$name-peers configmap/$name-config poddisruptionbudget/$name serviceaccount/$name-worker; do
  $kubectl -n "$ns" get "$child" >/dev/null || fail "$child missing"
done
ready() { [ "$($kubectl -n "$ns" get chatagent "$name" -o jsonpath='{.status.readyReplicas}')" = "$1" ]; }
wait_for "3 ready workers" 300 ready 3
$kubectl -n "$ns" get chatagents

if [ "$workers_run" = 1 ]; then
  step "the balancer assigns every partition (Ready condition)"
  cond() { [ "$($kubectl -n "$ns" get chatagent "$name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
  wait_for "Ready=True" 180 cond
  step "a chat message through the Service"
  $kubectl -n "$ns" port-forward "service/$name" 18088:8080 >/dev/null 2>&1 &
  pf=$!
  sleep 2
  [ "$(curl -s -o /dev/null -w '%{http_code}' localhost:18088/api/chat/conversation/e2e)" = 401 ] \
    || fail "a read without a credential was not refused"
  id=$(curl -sf -X POST localhost:18088/api/chat/send -H "Authorization: Bearer $token" \
    -H 'content-type: application/json' -d '{"conversationId":"e2e","content":"hello"}' \
    | sed -n 's/.*"messageId":"\([^"]*\)".*/\1/p')
  [ -n "$id" ] || fail "send failed"
  replied() { curl -sf localhost:18088/api/chat/conversation/e2e -H "Authorization: Bearer $token" | grep -q "\"inReplyTo\":\"$id\""; }
  wait_for "a reply" 120 replied
  kill "$pf" 2>/dev/null || true
fi

step "kubectl scale --replicas=4"
$kubectl -n "$ns" scale "chatagent/$name" --replicas=4 >/dev/null
wait_for "4 ready workers" 300 ready 4

step "a bad spec is refused, naming the field"
if out=$($kubectl -n "$ns" patch chatagent "$name" --type merge -p '{"spec":{"rebalance":{"lowWatermark":0.95}}}' 2>&1); then
  fail "lowWatermark above highWatermark was accepted"
fi
echo "$out" | grep -q "spec.rebalance" || fail "unexpected message: $out"

step "delete: children go with it"
$kubectl -n "$ns" delete chatagent "$name" --wait=true >/dev/null
gone() { ! $kubectl -n "$ns" get statefulset "$name" >/dev/null 2>&1; }
wait_for "the StatefulSet to be garbage collected" 120 gone
step "e2e passed"
