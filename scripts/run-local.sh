#!/usr/bin/env bash
# The whole local mesh: Kafka on 127.0.0.1:9092, an LLM (the fake one unless
# MESHCHAT_LLM_BASE_URL or OPENAI_API_KEY is set), three workers on :8080 :8081 :8082 with
# dynamic ownership, and the balancer (`meshchat-operator local -f docs/examples/local-mesh.yaml`)
# assigning the 24 partitions. Ctrl-C stops everything.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$HOME/.cache/meshchat/target}/debug
logs="$root/.run/logs"
mkdir -p "$logs"
pids=()

stop() {
  local status=$?
  [ -n "${interrupted:-}" ] && status=0
  trap - INT TERM EXIT
  echo
  echo "==> stopping workers (they drain: in-flight replies finish, offsets are committed)"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$root/scripts/kafka.sh" stop 9092 || true
  echo "==> stopped; logs are in $logs"
  exit "$status"
}
trap 'interrupted=1; exit 0' INT TERM
trap stop EXIT

echo "==> Kafka (the first run downloads the broker from Maven Central)"
"$root/scripts/kafka.sh" ensure 9092

llm_url=${MESHCHAT_LLM_BASE_URL:-}
if [ -z "$llm_url" ] && [ -n "${OPENAI_API_KEY:-}" ]; then
  llm_url=https://api.openai.com/v1
fi
if [ -z "$llm_url" ]; then
  echo "==> fake LLM (set OPENAI_API_KEY or MESHCHAT_LLM_BASE_URL to use a real one)"
  "$bin/fake-llm" --listen 127.0.0.1:8090 --token-latency-ms 40 >"$logs/fake-llm.log" 2>&1 &
  pids+=($!)
  llm_url=http://127.0.0.1:8090/v1
  export MESHCHAT_LLM_MODEL=${MESHCHAT_LLM_MODEL:-fake-model}
fi

for i in 0 1 2; do
  echo "==> worker node-$i on http://127.0.0.1:808$i"
  MESHCHAT_NODE_ID=node-$i MESHCHAT_LISTEN=127.0.0.1:808$i \
  MESHCHAT_KAFKA_BOOTSTRAP=127.0.0.1:9092 MESHCHAT_LLM_BASE_URL=$llm_url \
  MESHCHAT_OWNERSHIP=dynamic MESHCHAT_AGENT=meshchat \
    "$bin/meshchat-worker" >"$logs/node-$i.log" 2>&1 &
  pids+=($!)
done

echo "==> balancer (meshchat-operator local -f docs/examples/local-mesh.yaml)"
"$bin/meshchat-operator" local -f "$root/docs/examples/local-mesh.yaml" >"$logs/balancer.log" 2>&1 &
pids+=($!)

for i in 0 1 2; do
  for _ in $(seq 1 120); do
    curl -fs "http://127.0.0.1:808$i/readyz" >/dev/null 2>&1 && break
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "worker exited; see $logs"; exit 1; }
    sleep 0.5
  done
done

echo "==> waiting for the balancer's first assignment"
for _ in $(seq 1 60); do
  owned=$(curl -fs http://127.0.0.1:8080/api/mesh 2>/dev/null | grep -o '"owner"' | wc -l || true)
  [ "$owned" -ge 24 ] && break
  sleep 0.5
done

cat <<TXT

MeshChat is running.
  workers:   http://127.0.0.1:8080  http://127.0.0.1:8081  http://127.0.0.1:8082
  mesh:      http://127.0.0.1:8080/api/mesh   (assignment, loads, recent moves)
  LLM:       $llm_url
  Kafka:     127.0.0.1:9092
  logs:      $logs

Try it:
  curl -s -X POST http://127.0.0.1:8080/api/chat/send -H 'Content-Type: application/json' \\
    -d '{"conversationId":"conv-123","userId":"user-456","content":"Hello, how are you?"}'
  curl -s http://127.0.0.1:8081/api/chat/conversation/conv-123
  curl -N http://127.0.0.1:8082/api/chat/conversation/conv-123/events   # live (SSE)
  curl -s http://127.0.0.1:8080/api/agent/status
  curl -s -X POST http://127.0.0.1:8080/api/agent/migrate -H 'Content-Type: application/json' \\
    -d '{"targetNode":"node-1"}'                                        # move node-0's partitions

Press Ctrl-C to stop.
TXT
wait -n "${pids[@]}" || true
echo "a MeshChat process exited unexpectedly; see $logs"
exit 1
