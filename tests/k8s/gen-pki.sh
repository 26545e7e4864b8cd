#!/usr/bin/env bash
# gen-pki.sh — loopback-only PKI + credentials for a local kube-apiserver (openssl only,
# no Kubernetes binaries needed). Idempotent: existing files are kept unless FORCE=1.
#
# Usage: ./gen-pki.sh [DIR]     (default DIR=./pki; env: PORT=6443 TOKEN=<random>)
# Produces in DIR:
#   ca.crt ca.key                CA that signs the serving cert (put in kubeconfig)
#   apiserver.crt apiserver.key  serving cert, SAN IP:127.0.0.1, DNS:localhost, kubernetes.default.svc...
#   sa.key sa.pub                service-account token signing key pair
#   tokens.csv                   static token file: admin user in group system:masters
#   admin.kubeconfig             token-auth kubeconfig for kubectl / kube-rs / KCM / scheduler / kwok
set -euo pipefail
DIR="${1:-./pki}"
PORT="${PORT:-6443}"
SERVICE_IP="${SERVICE_IP:-10.96.0.1}"   # first IP of --service-cluster-ip-range=10.96.0.0/16 (never contacted)
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$DIR"; cd "$DIR"
[ "${FORCE:-0}" = 1 ] && rm -f ca.* apiserver.* sa.* tokens.csv admin.kubeconfig

if [ ! -s ca.key ]; then
  openssl genrsa -out ca.key 2048 2>/dev/null
  openssl req -x509 -new -nodes -key ca.key -sha256 -days 3650 -subj "/CN=meshchat-local-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out ca.crt
fi

if [ ! -s apiserver.key ]; then
  openssl genrsa -out apiserver.key 2048 2>/dev/null
  openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr
  cat > apiserver.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:${SERVICE_IP}
EOF
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 3650 -sha256 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  rm -f apiserver.csr apiserver.ext ca.srl
fi

if [ ! -s sa.key ]; then
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
fi

if [ ! -s tokens.csv ]; then
  TOKEN="${TOKEN:-$(openssl rand -hex 24)}"
  # format: token,user,uid[,"group1,group2"]
  echo "${TOKEN},admin,admin-uid,system:masters" > tokens.csv
fi
TOKEN="$(cut -d, -f1 tokens.csv)"

CA_DATA="$(base64 -w0 < ca.crt)"
sed -e "s|\${SERVER}|https://127.0.0.1:${PORT}|" -e "s|\${CA_DATA}|${CA_DATA}|" -e "s|\${TOKEN}|${TOKEN}|" \
  "$HERE/kubeconfig.tmpl" > admin.kubeconfig
chmod 600 ./*.key tokens.csv admin.kubeconfig
openssl verify -CAfile ca.crt apiserver.crt >/dev/null
echo "PKI ready in $(pwd)"
