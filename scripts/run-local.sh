#!/usr/bin/env bash
# The whole local mesh: Kafka on 127.0.0.1:9092, an LLM (the fake one unless
# MESHCHAT_LLM_BASE_URL or OPENAI_API_KEY is set), three workers on :8080 :8081 :8082 (their
# internal listeners — probes, metrics, the drain, peers' reads — on :9080 :9081 :9082) with
# dynamic ownership, and the balancer (`meshchat-operator local -f docs/examples/local-mesh.yaml`)
# assigning the 24 partitions. A process that dies is reported and the rest keep serving (kill -9
# a worker: its partitions move to the others); Ctrl-C stops everything.
#
# Ports and directories can be moved (the tests run `make run` beside a developer's mesh):
#   MESHCHAT_RUN_KAFKA_PORT (9092), MESHCHAT_RUN_KAFKA_DIR (kafka.sh's default for the port),
#   MESHCHAT_RUN_PORT (8080: workers on it and the next two), MESHCHAT_RUN_INTERNAL_PORT (9080),
#   MESHCHAT_RUN_LLM_PORT (8090), MESHCHAT_RUN_STATE (.run: the mesh secret, development
#   credentials, logs).
#
# Every public route needs a credential: the first run creates development API keys for two
# tenants (acme and globex: a user and an admin each) and the mesh's operator, kept in
# $state/dev-credentials.json (and .env, to `source`); the workers get only their hashes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$HOME/.cache/meshchat/target}/debug
kafka_port=${MESHCHAT_RUN_KAFKA_PORT:-9092}
kafka_dir=${MESHCHAT_RUN_KAFKA_DIR:-}
http_port=${MESHCHAT_RUN_PORT:-8080}
internal_port=${MESHCHAT_RUN_INTERNAL_PORT:-9080}
llm_port=${MESHCHAT_RUN_LLM_PORT:-8090}
state=${MESHCHAT_RUN_STATE:-$root/.run}
logs=$state/logs
mkdir -p "$logs"
chmod 700 "$state"
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

# what the workers present to each other's internal listener (kept across runs, never printed)
if [ ! -s "$state/mesh-secret" ]; then
  (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$state/mesh-secret")
fi
MESHCHAT_MESH_SECRET=$(cat "$state/mesh-secret")
export MESHCHAT_MESH_SECRET

# development credentials: API keys, kept across runs; the workers load only the hashes
creds=$state/dev-credentials.json
if [ ! -s "$creds" ] || [ ! -s "$state/api-keys.json" ] || [ ! -s "$state/dev-credentials.env" ]; then
  echo "==> creating development credentials in $creds"
  dev=(
    "ACME_USER acme alice user"
    "ACME_ADMIN acme acme-admin admin"
    "GLOBEX_USER globex carol user"
    "GLOBEX_ADMIN globex globex-admin admin"
    "MESH_OPERATOR default mesh-operator operator"
  )
  (
    umask 077
    json='{"credentials": ['
    keys='{"keys": ['
    env="# MeshChat development credentials (make run). Never use them outside development."$'\n'
    sep=
    for line in "${dev[@]}"; do
      read -r var tenant user role <<<"$line"
      token=mcdev_$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')
      hash=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
      json+="$sep"$'\n'"  {\"tenant\": \"$tenant\", \"user\": \"$user\", \"role\": \"$role\", \"token\": \"$token\"}"
      keys+="$sep"$'\n'"  {\"id\": \"dev-$user\", \"tenant\": \"$tenant\", \"user\": \"$user\", \"role\": \"$role\", \"sha256\": \"$hash\"}"
      env+="$var=$token"$'\n'
      sep=,
    done
    printf '%s\n]}\n' "$json" >"$creds"
    printf '%s\n]}\n' "$keys" >"$state/api-keys.json"
    printf '%s' "$env" >"$state/dev-credentials.env"
  )
fi
export MESHCHAT_API_KEYS_FILE=$state/api-keys.json

urls=()
internal=()
for i in 0 1 2; do
  port=$((http_port + i))
  iport=$((internal_port + i))
  urls+=("http://127.0.0.1:$port")
  internal+=("http://127.0.0.1:$iport")
  MESHCHAT_NODE_ID=node-$i MESHCHAT_LISTEN=127.0.0.1:$port MESHCHAT_INTERNAL_LISTEN=127.0.0.1:$iport \
  MESHCHAT_KAFKA_BOOTSTRAP=127.0.0.1:$kafka_port MESHCHAT_LLM_BASE_URL=$llm_url \
  MESHCHAT_OWNERSHIP=dynamic MESHCHAT_AGENT=meshchat \
    spawn "worker node-$i" "$logs/node-$i.log" "$bin/meshchat-worker"
  echo "==> worker node-$i on http://127.0.0.1:$port, internal http://127.0.0.1:$iport (pid ${pids[-1]})"
done

echo "==> balancer (meshchat-operator local -f docs/examples/local-mesh.yaml)"
spawn "balancer" "$logs/balancer.log" \
  "$bin/meshchat-operator" local -f "$root/docs/examples/local-mesh.yaml" --bootstrap "127.0.0.1:$kafka_port"

for url in "${internal[@]}"; do
  for _ in $(seq 1 120); do
    curl -fs "$url/readyz" >/dev/null 2>&1 && break
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || { echo "${names[$pid]} exited while starting; see $logs" >&2; exit 1; }
    done
    sleep 0.5
  done
done

operator_token=$(sed -n 's/^MESH_OPERATOR=//p' "$state/dev-credentials.env")
echo "==> waiting for the balancer's first assignment"
for _ in $(seq 1 60); do
  owned=$(curl -fs "${urls[0]}/api/mesh" -H "Authorization: Bearer $operator_token" 2>/dev/null | grep -o '"owner"' | wc -l || true)
  [ "$owned" -ge 24 ] && break
  sleep 0.5
done

cat <<TXT

MeshChat is running.
  chat page: ${urls[0]}/        (sign in with a key below, e.g. ACME_USER; every worker serves it)
  mesh page: ${urls[0]}/mesh    (live assignment, loads and moves; ACME_ADMIN or MESH_OPERATOR)
  workers:   ${urls[*]}
  internal:  ${internal[*]}   (/healthz /readyz /metrics /drain: the mesh's, not clients')
  mesh:      ${urls[0]}/api/mesh   (assignment, loads, recent moves; admin or operator)
  LLM:       $llm_url
  Kafka:     127.0.0.1:$kafka_port
  logs:      $logs
  processes: $(for pid in "${pids[@]}"; do printf '%s=%s ' "${names[$pid]// /-}" "$pid"; done)
  credentials: $creds (development only; every route needs one)
$(sed -n 's/^\([A-Z_]*\)=\(.*\)/    \1=\2/p' "$state/dev-credentials.env")

Try it:
  source $state/dev-credentials.env
  curl -s -X POST ${urls[0]}/api/chat/send -H "Authorization: Bearer \$ACME_USER" \\
    -H 'Content-Type: application/json' -d '{"conversationId":"conv-123","content":"Hello, how are you?"}'
  curl -s ${urls[1]}/api/chat/conversation/conv-123 -H "Authorization: Bearer \$ACME_USER"
  curl -N ${urls[2]}/api/chat/conversation/conv-123/events -H "Authorization: Bearer \$ACME_USER"   # live (SSE)
  curl -s ${urls[1]}/api/chat/conversation/conv-123 -H "Authorization: Bearer \$GLOBEX_USER"   # 404: another tenant
  curl -s -X POST ${urls[0]}/api/agent/migrate -H "Authorization: Bearer \$MESH_OPERATOR" \\
    -H 'Content-Type: application/json' -d '{"targetNode":"node-1"}'   # move node-0's partitions
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
