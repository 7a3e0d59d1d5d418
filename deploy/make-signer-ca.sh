#!/usr/bin/env bash
# Makes the signer's CA (EC P-256, ten years) as the Secret the patchwire
# signer reads. The key never leaves this Secret; daemons get only the CA
# certificate (the signer publishes it in the ConfigMap patchwire-peer-ca).
# Usage: deploy/make-signer-ca.sh | kubectl apply -f -
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout tls.key -out tls.crt \
  -days 3650 -subj "/CN=patchwire node identities" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
kubectl create secret tls patchwire-signer-ca --namespace patchwire-system \
  --cert=tls.crt --key=tls.key --dry-run=client -o yaml
