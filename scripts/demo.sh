#!/usr/bin/env bash
# make demo: the operator end to end on local emulators (the project's Kubernetes API emulator and
# moto for AWS Secrets Manager, SQS and EventBridge's delivery): sync, a denied reference refused
# at apply time by the admission webhook and by the controller, a
# rotation announced by Secrets Manager's own event reaching the Secret at once and restarting the
# one Deployment that uses it, and a stuck rotation reported. Runs until Ctrl-C;
# DEMO_NONINTERACTIVE=1 exits after the walkthrough (make test checks every step).
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

say "An SQS queue fed by an EventBridge rule on Secrets Manager's 'Secret Label Updated' events"
queue=$("$py" scripts/aws_demo.py queue managed-secrets-events)
echo "queue: $queue   (rule: {\"source\": [\"aws.secretsmanager\"], \"detail-type\": [\"Secret Label Updated\"]})"

say "Two Deployments in db: api reads the Secret db-credentials, web does not"
k -n db apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - name: api
          image: registry.example.com/db/api:1.0
          envFrom: [{secretRef: {name: db-credentials}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: registry.example.com/db/web:1.0}]
YAML
revision() { k -n db get deployment "$1" -o jsonpath='{.metadata.annotations.deployment\.kubernetes\.io/revision}'; }
for _ in $(seq 50); do [ "$(revision api)" = "1" ] && [ "$(revision web)" = "1" ] && break; sleep 0.1; done
echo "revisions: api $(revision api), web $(revision web)"

say "Starting the operator (managed-secrets run), receiving from the queue and serving its admission webhook"
wport=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
KUBECONFIG="$work/kubeconfig" POD_NAMESPACE=default "$target/debug/managed-secrets" run --metrics-addr 127.0.0.1:0 \
  --events-queue-url "$queue" --events-wait 2s --events-backstop-interval 10s --rotation-stuck-after 5s \
  --webhook-addr "127.0.0.1:$wport" --webhook-cert-hosts 127.0.0.1 \
  > "$work/operator.log" 2>&1 & pids+=($!)
echo "The webhook configuration (the chart's, calling 127.0.0.1:$wport; the operator makes its CA and fills in the caBundle):"
k apply -f - <<YAML
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: managed-secrets}
webhooks:
  - name: managedsecrets.managedsecrets.io
    admissionReviewVersions: [v1]
    sideEffects: None
    failurePolicy: Ignore
    timeoutSeconds: 3
    clientConfig: {url: "https://127.0.0.1:$wport/validate/managedsecrets"}
    rules: [{apiGroups: [managedsecrets.io], apiVersions: [v1alpha1], resources: [managedsecrets], operations: [CREATE, UPDATE]}]
    namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, default]}]}
YAML

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

say "The db team asks for another team's secret (examples/denied.yaml): refused at apply time"
"$py" scripts/aws_demo.py create prod/payments/api-key '{"key":"payments-only"}' >/dev/null
for _ in $(seq 100); do
  out=$(k apply --dry-run=server -f examples/denied.yaml 2>&1 || true)
  case "$out" in *"denied the request"*) break;; esac
  sleep 0.2
done
if out=$(k apply -f examples/denied.yaml 2>&1); then echo "the webhook admitted it: $out"; exit 1; fi
echo "$out"
case "$out" in *'admission webhook "managedsecrets.managedsecrets.io" denied the request: PolicyDenied'*) ;;
  *) echo "not refused by the webhook"; tail -20 "$work/operator.log"; exit 1;; esac

say "Without the webhook (deleted here; an unavailable one is ignored), the operator still refuses it, with no AWS call"
k delete validatingwebhookconfiguration managed-secrets
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

say "Restart what reads the Secret when AWS rotates it (rollout.auto finds api, not web); refresh hourly from now on"
k -n db patch managedsecret db-credentials --type merge -p '{"spec":{"refreshInterval":"1h","rollout":{"auto":true,"debounce":"1s"}}}'
for _ in $(seq 100); do
  recorded=$(k -n db get managedsecret db-credentials -o jsonpath='{.status.rollouts[*].name}')
  [ "$recorded" = "api" ] && break
  sleep 0.1
done
[ "$recorded" = "api" ] || { echo "the rollout target was not recorded (got: $recorded)"; tail -20 "$work/operator.log"; exit 1; }
echo "rollout targets: $recorded (nothing restarted on the first sync)"

say "Rotating the AWS secret the way a rotation Lambda does (AWSPENDING, then AWSCURRENT moved)"
start=$(date +%s%N)
new_version=$("$py" scripts/aws_demo.py rotate prod/db/credentials Rotated-456)
echo "new AWSCURRENT version: $new_version; Secrets Manager announces it (Secret Label Updated)"
for _ in $(seq 300); do
  v=$(k -n db get managedsecret db-credentials -o jsonpath='{.status.syncedVersionId}')
  [ "$v" = "$new_version" ] && break
  sleep 0.05
done
[ "$v" = "$new_version" ] || { echo "the rotation did not reach the Secret"; tail -20 "$work/operator.log"; exit 1; }
echo "password:     $(k -n db get secret db-credentials -o jsonpath='{.data.password}' | base64 -d)"
echo "AWS version:  $v, in the Secret $(( ($(date +%s%N) - start) / 1000000 )) ms after the rotation started (no refresh was due for an hour)"
grep -q "an event moved ManagedSecrets" "$work/operator.log" || { echo "the rotation did not come by its event"; tail -20 "$work/operator.log"; exit 1; }

say "The workload that reads it rolls out once; the other is untouched"
for _ in $(seq 100); do [ "$(revision api)" = "2" ] && break; sleep 0.1; done
[ "$(revision api)" = "2" ] || { echo "api did not roll out"; tail -20 "$work/operator.log"; exit 1; }
[ "$(revision web)" = "1" ] || { echo "web was restarted"; exit 1; }
echo "revisions: api $(revision api), web $(revision web)"
for _ in $(seq 50); do
  k -n db get events --field-selector involvedObject.name=db-credentials -o jsonpath='{.items[*].reason}' | grep -qw RolledOut && break
  sleep 0.1
done
k -n db get events --field-selector involvedObject.name=db-credentials
k -n db get events --field-selector involvedObject.name=db-credentials -o jsonpath='{.items[*].reason}' | grep -qw RolledOut \
  || { echo "no RolledOut Event"; exit 1; }
sleep 3
[ "$(revision api)" = "2" ] || { echo "api rolled out twice"; exit 1; }

say "A rotation whose function fails after createSecret: AWSPENDING stays, finishSecret never runs"
pending=$("$py" scripts/aws_demo.py start-rotation prod/db/credentials Never-Finished)
echo "AWSPENDING version: $pending (AWS announces no AWSPENDING; the operator sees it at its next look:"
echo "a refresh, a rotation window, or, here, the force-sync annotation; it reports it after --rotation-stuck-after, 5s here)"
k -n db annotate managedsecret db-credentials --overwrite "managedsecrets.io/force-sync=$(date +%s)"
for _ in $(seq 60); do
  reason=$(k -n db get managedsecret db-credentials -o jsonpath='{.status.conditions[?(@.type=="RotationHealthy")].reason}')
  [ "$reason" = "RotationStuck" ] && break
  sleep 1
done
[ "$reason" = "RotationStuck" ] || { echo "the stuck rotation was not reported"; tail -20 "$work/operator.log"; exit 1; }
k -n db get managedsecret db-credentials -o jsonpath='{.status.conditions[?(@.type=="RotationHealthy")].message}'; echo
ready=$(k -n db get managedsecret db-credentials -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')
echo "Ready: $ready (the synced value is still valid); password still $(k -n db get secret db-credentials -o jsonpath='{.data.password}' | base64 -d)"
[ "$ready" = "True" ] || { echo "Ready changed"; exit 1; }

say "Done: the Secret follows AWS, its workload restarts once, and a failing rotation shows. Operator log: $work/operator.log"
if [ "${DEMO_NONINTERACTIVE:-}" = "1" ]; then exit 0; fi
echo "Everything keeps running; try kubectl with KUBECONFIG=$work/kubeconfig. Ctrl-C to stop."
wait
