#!/usr/bin/env bash
# Makes the Secret the DaemonSet mounts for mutual TLS between daemons: a
# private CA and one certificate (name "patchwire") that every daemon uses.
# Usage: deploy/make-peer-tls.sh | kubectl apply -f -
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj /CN=patchwire-ca -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj /CN=patchwire -keyout tls.key -out tls.csr 2>/dev/null
printf 'subjectAltName=DNS:patchwire\nextendedKeyUsage=serverAuth,clientAuth\n' > ext.cnf
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
  -extfile ext.cnf -out tls.crt 2>/dev/null
kubectl create secret generic patchwire-peer-tls --namespace patchwire-system \
  --from-file=tls.crt --from-file=tls.key --from-file=ca.crt --dry-run=client -o yaml
