#!/usr/bin/env bash
# Real Apache Kafka (KRaft, one node) on loopback, without docker.
#   kafka.sh fetch                 fetch the broker jars from Maven Central once (cached)
#   kafka.sh start [PORT] [DIR]    format DIR if new, start the broker, wait until it answers
#   kafka.sh ensure [PORT] [DIR]   start unless a broker already answers on PORT
#   kafka.sh stop [PORT] [DIR]     stop it (data stays in DIR, so a restart keeps messages)
#   kafka.sh status [PORT]
# Defaults: PORT=9092, DIR=$HOME/.cache/meshchat/kafka-data-PORT
# KAFKA_SECURE=1 (start): also a SASL_SSL listener (SCRAM-SHA-512, user `meshchat`, password
# in DIR/tls/password) on PORT+2 and an SSL listener requiring a client certificate on PORT+3,
# with a CA, broker and client certificates made by openssl in DIR/tls (ca.crt, client.crt,
# client.key): what a Strimzi cluster offers its users, for the tests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${MESHCHAT_CACHE:-$HOME/.cache/meshchat}
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
libs="$cache/kafka-$version/libs"
cmd=${1:-}; port=${2:-9092}; dir=${3:-$cache/kafka-data-$port}
ctl_port=$((port + 1))

need() {
  command -v "$1" >/dev/null 2>&1 && return
  echo "kafka.sh: '$1' is not installed. Install a JDK 17+ and Maven, e.g. on Debian/Ubuntu:" >&2
  echo "  apt-get install -y openjdk-17-jdk-headless maven" >&2
  exit 1
}

fetch() {
  [ -f "$libs/.complete" ] && return
  need java; need mvn
  echo "kafka.sh: fetching Apache Kafka $version jars from Maven Central (first run only) ..." >&2
  mkdir -p "$libs"
  mvn -B -ntp -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime \
    -Dmaven.repo.local="${MESHCHAT_M2:-$HOME/.m2/repository}" >&2
  touch "$libs/.complete"
  echo "kafka.sh: Kafka jars cached in $libs" >&2
}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True when the broker serves metadata (not merely when its port is open).
ready() {
  java -cp "$libs/*" org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "127.0.0.1:$port" >/dev/null 2>&1 ||
  # older layouts keep the tool in kafka.admin
  java -cp "$libs/*" kafka.admin.BrokerApiVersionsCommand \
    --bootstrap-server "127.0.0.1:$port" >/dev/null 2>&1
}

# CA, broker and client certificates (PEM) for the secure listeners, made once per DIR.
make_tls() {
  local t="$dir/tls"
  [ -f "$t/client.key" ] && return
  mkdir -p "$t"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=meshchat-test-ca" \
    -keyout "$t/ca.key" -out "$t/ca.crt" 2>/dev/null
  for who in broker client; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$who" -keyout "$t/$who.key.pkcs1" -out "$t/$who.csr" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$t/$who.key.pkcs1" -out "$t/$who.key"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$t/$who.ext"
    openssl x509 -req -in "$t/$who.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial -days 30 \
      -extfile "$t/$who.ext" -out "$t/$who.crt" 2>/dev/null
  done
  cat "$t/broker.key" "$t/broker.crt" >"$t/broker.pem"
  openssl rand -hex 12 >"$t/password"
}

write_config() {
  mkdir -p "$dir/logs"
  local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctl_port"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [ "${KAFKA_SECURE:-0}" = 1 ]; then
    make_tls
    listeners="$listeners,SASL_SSL://127.0.0.1:$((port + 2)),SSL://127.0.0.1:$((port + 3))"
    protocols="$protocols,SASL_SSL:SASL_SSL,SSL:SSL"
  fi
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctl_port
listeners=$listeners
advertised.listeners=${listeners/,CONTROLLER:\/\/127.0.0.1:$ctl_port/}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
log.segment.bytes=67108864
log.retention.hours=168
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
PROPS
  if [ "${KAFKA_SECURE:-0}" = 1 ]; then
    cat >>"$dir/server.properties" <<PROPS
ssl.keystore.type=PEM
ssl.keystore.location=$dir/tls/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/tls/ca.crt
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.ssl.ssl.client.auth=required
PROPS
  fi
  cat >"$dir/log4j2.yaml" <<'LOG'
Configuration:
  Appenders:
    Console: { name: STDOUT, PatternLayout: { pattern: "[%d] %p %m (%c)%n" } }
  Loggers:
    Root: { level: INFO, AppenderRef: [ { ref: STDOUT } ] }
    Logger:
      - { name: kafka, level: WARN }
      - { name: org.apache.kafka, level: WARN }
      - { name: state.change.logger, level: WARN }
LOG
  # KAFKA_REQUEST_LOG=1: every answered request, one JSON line each, in logs/requests.log
  # (the benchmarks count the fetches and bytes live delivery costs the broker from it)
  if [ "${KAFKA_REQUEST_LOG:-0}" = 1 ]; then
    cat >>"$dir/log4j2.yaml" <<'LOG'
      - name: kafka.request.logger
        level: DEBUG
        additivity: false
        AppenderRef: [ { ref: REQUESTS } ]
LOG
    sed -i 's|^    Console: .*|&\n    File: { name: REQUESTS, fileName: "${sys:kafka.logs.dir}/requests.log", PatternLayout: { pattern: "%m%n" } }|' "$dir/log4j2.yaml"
  fi
}

start() {
  fetch; need java
  if answers "$port"; then echo "kafka.sh: port $port is already in use (a broker from another data dir? stop it first)" >&2; exit 1; fi
  write_config
  if [ ! -f "$dir/data/meta.properties" ]; then
    local id; id=$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid)
    local scram=()
    [ "${KAFKA_SECURE:-0}" = 1 ] && scram=(--add-scram "SCRAM-SHA-512=[name=meshchat,password=$(cat "$dir/tls/password")]")
    java -cp "$libs/*" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" "${scram[@]}" >"$dir/logs/format.log" 2>&1 \
      || { cat "$dir/logs/format.log" >&2; exit 1; }
  fi
  echo "kafka.sh: starting Kafka $version on 127.0.0.1:$port (data in $dir)" >&2
  nohup java -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/log4j2.yaml" -Dkafka.logs.dir="$dir/logs" \
    -cp "$libs/*" kafka.Kafka "$dir/server.properties" >"$dir/logs/server.out" 2>&1 &
  echo $! >"$dir/kafka.pid"
  for _ in $(seq 1 120); do
    if ready; then echo "kafka.sh: broker ready on 127.0.0.1:$port" >&2; return; fi
    if ! kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null; then
      echo "kafka.sh: broker exited; last log lines:" >&2; tail -30 "$dir/logs/server.out" >&2; exit 1
    fi
    sleep 1
  done
  echo "kafka.sh: broker did not answer within 120 s; see $dir/logs/server.out" >&2; exit 1
}

stop() {
  local pidf="$dir/kafka.pid"
  [ -f "$pidf" ] || { echo "kafka.sh: no broker started from $dir" >&2; return; }
  local pid; pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf"
  echo "kafka.sh: broker on port $port stopped" >&2
}

case "$cmd" in
  fetch) fetch ;;
  start) start ;;
  ensure) if answers "$port" && { fetch; ready; }; then echo "kafka.sh: broker already answers on $port" >&2; else start; fi ;;
  stop) stop ;;
  status) fetch; if ready; then echo "up"; else echo "down"; exit 1; fi ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
