#!/usr/bin/env bash
# The whole local mesh: Kafka on 127.0.0.1:9092, an LLM (the fake one unless
# MESHCHAT_LLM_BASE_URL or OPENAI_API_KEY is set), three workers on :8080 :8081 :8082 with
# dynamic ownership, and the balancer (`meshchat-operator local -f docs/examples/local-mesh.yaml`)
# assigning the 24 partitions. A process that dies is reported and the rest keep serving (kill -9
# a worker: its partitions move to the others); Ctrl-C stops everything.
#
# Ports and directories can be moved (the tests run `make run` beside a developer's mesh):
#   MESHCHAT_RUN_KAFKA_PORT (9092), MESHCHAT_RUN_KAFKA_DIR (kafka.sh's default for the port),
#   MESHCHAT_RUN_PORT (8080: workers on it and the next two), MESHCHAT_RUN_LLM_PORT (8090),
#   MESHCHAT_RUN_LOGS (.run/logs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$HOME/.cache/meshchat/target}/debug
kafka_port=${MESHCHAT_RUN_KAFKA_PORT:-9092}
kafka_dir=${MESHCHAT_RUN_KAFKA_DIR:-}
http_port=${MESHCHAT_RUN_PORT:-8080}
llm_port=${MESHCHAT_RUN_LLM_PORT:-8090}
logs=${MESHCHAT_RUN_LOGS:-$root/.run/logs}
mkdir -p "$logs"
pids=()
declare -A names
started_kafka=

kafka() { "$root/scripts/kafka.sh" "$1" "$kafka_port" ${kafka_dir:+"$kafka_dir"}; }

stop() {
  trap - INT TERM EXIT
  echo
  echo "==> stopping the mesh (workers drain: in-flight replies finish, offsets are committed)"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$started_kafka" ]; then kafka stop || true; fi
  echo "==> stopped; logs are in $logs"
}
trap 'exit 0' INT TERM
trap stop EXIT

# starts "$@" in the background as process $1 (a name for messages)
spawn() {
  local name=$1 log=$2; shift 2
  "$@" >"$log" 2>&1 &
  pids+=($!)
  names[$!]=$name
}

echo "==> Kafka on 127.0.0.1:$kafka_port (the first run downloads the broker from Maven Central)"
if (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null; then
  kafka ensure
else
  kafka ensure
  started_kafka=1
fi

llm_url=${MESHCHAT_LLM_BASE_URL:-}
if [ -z "$llm_url" ] && [ -n "${OPENAI_API_KEY:-}" ]; then
  llm_url=https://api.openai.com/v1
fi
if [ -z "$llm_url" ]; then
  echo "==> fake LLM on 127.0.0.1:$llm_port (set OPENAI_API_KEY or MESHCHAT_LLM_BASE_URL to use a real one)"
  spawn "fake LLM" "$logs/fake-llm.log" "$bin/fake-llm" --listen "127.0.0.1:$llm_port" --token-latency-ms 40
  llm_url=http://127.0.0.1:$llm_port/v1
  export MESHCHAT_LLM_MODEL=${MESHCHAT_LLM_MODEL:-fake-model}
fi

urls=()
for i in 0 1 2; do
  port=$((http_port + i))
  urls+=("http://127.0.0.1:$port")
  MESHCHAT_NODE_ID=node-$i MESHCHAT_LISTEN=127.0.0.1:$port \
  MESHCHAT_KAFKA_BOOTSTRAP=127.0.0.1:$kafka_port MESHCHAT_LLM_BASE_URL=$llm_url \
  MESHCHAT_OWNERSHIP=dynamic MESHCHAT_AGENT=meshchat \
    spawn "worker node-$i" "$logs/node-$i.log" "$bin/meshchat-worker"
  echo "==> worker node-$i on http://127.0.0.1:$port (pid ${pids[-1]})"
done

echo "==> balancer (meshchat-operator local -f docs/examples/local-mesh.yaml)"
spawn "balancer" "$logs/balancer.log" \
  "$bin/meshchat-operator" local -f "$root/docs/examples/local-mesh.yaml" --bootstrap "127.0.0.1:$kafka_port"

for url in "${urls[@]}"; do
  for _ in $(seq 1 120); do
    curl -fs "$url/readyz" >/dev/null 2>&1 && break
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || { echo "${names[$pid]} exited while starting; see $logs" >&2; exit 1; }
    done
    sleep 0.5
  done
done

echo "==> waiting for the balancer's first assignment"
for _ in $(seq 1 60); do
  owned=$(curl -fs "${urls[0]}/api/mesh" 2>/dev/null | grep -o '"owner"' | wc -l || true)
  [ "$owned" -ge 24 ] && break
  sleep 0.5
done

cat <<TXT

MeshChat is running.
  workers:   ${urls[*]}
  mesh:      ${urls[0]}/api/mesh   (assignment, loads, recent moves)
  LLM:       $llm_url
  Kafka:     127.0.0.1:$kafka_port
  logs:      $logs
  processes: $(for pid in "${pids[@]}"; do printf '%s=%s ' "${names[$pid]// /-}" "$pid"; done)

Try it:
  curl -s -X POST ${urls[0]}/api/chat/send -H 'Content-Type: application/json' \\
    -d '{"conversationId":"conv-123","userId":"user-456","content":"Hello, how are you?"}'
  curl -s ${urls[1]}/api/chat/conversation/conv-123
  curl -N ${urls[2]}/api/chat/conversation/conv-123/events   # live (SSE)
  curl -s ${urls[0]}/api/agent/status
  curl -s -X POST ${urls[0]}/api/agent/migrate -H 'Content-Type: application/json' \\
    -d '{"targetNode":"node-1"}'                                        # move node-0's partitions
  kill -9 ${pids[-2]}                # worker node-2: its partitions move to the others

Press Ctrl-C to stop.
TXT

# a process that dies is reported; the others go on serving until Ctrl-C
while [ ${#pids[@]} -gt 0 ]; do
  died=
  if wait -n -p died "${pids[@]}"; then status=0; else status=$?; fi
  [ -n "$died" ] || continue
  echo "==> ${names[$died]} (pid $died) exited with status $status; the rest keep serving (Ctrl-C stops all; logs in $logs)"
  alive=()
  for pid in "${pids[@]}"; do [ "$pid" != "$died" ] && alive+=("$pid"); done
  pids=("${alive[@]}")
done
echo "==> every MeshChat process has exited; Ctrl-C stops Kafka"
while true; do sleep 3600; done
