#!/usr/bin/env bash
# make demo: the operator end to end on local emulators (the project's Kubernetes API emulator and
# moto for AWS Secrets Manager). Runs until Ctrl-C; DEMO_NONINTERACTIVE=1 exits after the walkthrough.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$HOME/.cache/managed-secrets/target}
py=${MANAGED_SECRETS_PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
kubectl_bin=$(command -v kubectl || echo "$root/.tools/bin/kubectl")
k() { "$kubectl_bin" --kubeconfig "$work/kubeconfig" "$@"; }

say "Starting the Kubernetes API emulator and the AWS emulator (moto)"
"$target/debug/kube-emulator" --write-kubeconfig "$work/kubeconfig" > "$work/kube.out" 2> "$work/kube.log" & pids+=($!)
mkfifo "$work/moto.in"
"$py" tests/aws/moto_server.py < "$work/moto.in" > "$work/moto.out" 2> "$work/moto.log" & pids+=($!)
exec 3> "$work/moto.in"   # keeps moto's stdin open; moto exits when the demo does
for _ in $(seq 100); do [ -s "$work/kube.out" ] && [ -s "$work/moto.out" ] && break; sleep 0.1; done
kube_url=$(awk '{print $3}' "$work/kube.out"); aws_url=$(awk '{print $3}' "$work/moto.out")
echo "Kubernetes API: $kube_url    AWS Secrets Manager: $aws_url"
echo "Point kubectl at the emulated cluster with:  export KUBECONFIG=$work/kubeconfig"

export AWS_ENDPOINT_URL=$aws_url AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1

say "Installing the CRDs (kubectl apply -f crds/): ManagedSecret and SecretAccessPolicy"
k apply -f crds/
k wait --for=condition=Established crd/managedsecrets.managedsecrets.io crd/secretaccesspolicies.managedsecrets.io --timeout=30s

say "A team namespace (db, env=prod) and the access policy: env/namespace/* for every labelled namespace"
k apply -f examples/namespace-db.yaml
cat examples/access-policy.yaml
k apply -f examples/access-policy.yaml

say "Creating prod/db/credentials in AWS Secrets Manager"
"$py" scripts/aws_demo.py create prod/db/credentials "$(cat examples/aws-values/prod/db/credentials.json)"

say "Starting the operator (managed-secrets run)"
KUBECONFIG="$work/kubeconfig" POD_NAMESPACE=default "$target/debug/managed-secrets" run --metrics-addr 127.0.0.1:0 > "$work/operator.log" 2>&1 & pids+=($!)

say "Applying a ManagedSecret (examples/db-credentials.yaml)"
cat examples/db-credentials.yaml
k apply -f examples/db-credentials.yaml
k -n db wait --for=condition=Ready managedsecret/db-credentials --timeout=60s
k -n db get managedsecrets

say "The Secret the operator wrote (the password is a demo value)"
k -n db get secret db-credentials
echo "password:     $(k -n db get secret db-credentials -o jsonpath='{.data.password}' | base64 -d)"
echo "DATABASE_URL: $(k -n db get secret db-credentials -o jsonpath='{.data.DATABASE_URL}' | base64 -d)"
old_version=$(k -n db get managedsecret db-credentials -o jsonpath='{.status.syncedVersionId}')

say "The db team asks for another team's secret (examples/denied.yaml): refused, no AWS call"
"$py" scripts/aws_demo.py create prod/payments/api-key '{"key":"payments-only"}' >/dev/null
k apply -f examples/denied.yaml
for _ in $(seq 60); do
  reason=$(k -n db get managedsecret payments-api-key -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}')
  [ "$reason" = "PolicyDenied" ] && break
  sleep 0.5
done
[ "$reason" = "PolicyDenied" ] || { echo "the request was not refused"; tail -20 "$work/operator.log"; exit 1; }
k -n db get managedsecret payments-api-key -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}'; echo
k -n db get secret payments-api-key 2>/dev/null && { echo "a denied ManagedSecret wrote a Secret"; exit 1; } || echo "(no Secret payments-api-key was written)"
echo "AWS version:  $old_version"

say "Rotating the AWS secret the way a rotation Lambda does (AWSPENDING, then AWSCURRENT moved)"
new_version=$("$py" scripts/aws_demo.py rotate prod/db/credentials Rotated-456)
echo "new AWSCURRENT version: $new_version"

say "Waiting for the operator's next refresh (refreshInterval: 10s)"
for _ in $(seq 60); do
  v=$(k -n db get managedsecret db-credentials -o jsonpath='{.status.syncedVersionId}')
  [ "$v" = "$new_version" ] && break
  sleep 1
done
[ "$v" = "$new_version" ] || { echo "the rotation did not reach the Secret"; tail -20 "$work/operator.log"; exit 1; }
echo "password:     $(k -n db get secret db-credentials -o jsonpath='{.data.password}' | base64 -d)"
echo "AWS version:  $v"
k -n db get events --field-selector involvedObject.name=db-credentials

say "Done: the Secret follows AWS. Operator log: $work/operator.log"
if [ "${DEMO_NONINTERACTIVE:-}" = "1" ]; then exit 0; fi
echo "Everything keeps running; try kubectl with KUBECONFIG=$work/kubeconfig. Ctrl-C to stop."
wait
