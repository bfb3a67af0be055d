# managed-secrets: `make demo` runs the operator end to end on local emulators; `make test` runs
# everything CI runs. Both install what they need first (scripts/setup-tools.sh).
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/managed-secrets/target
export MANAGED_SECRETS_PYTHON ?= $(CURDIR)/.venv/bin/python
export KUBE_EMULATOR_BIN ?= $(CARGO_TARGET_DIR)/debug/kube-emulator
# The machine's kubectl first; the one unpacked by setup-tools only when there is none.
export PATH := $(PATH):$(CURDIR)/.tools/bin
HELM := $(CURDIR)/.tools/bin/helm

.PHONY: test tools lint deny build unit python-tests chart chart-docs crds check-crds operator image-lint workflows aws-templates demo demo-check fuzz bench clean

test: tools lint deny image-lint workflows aws-templates build unit python-tests chart check-crds demo-check
	@echo "make test: all checks passed"

tools:
	@scripts/setup-tools.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	python3 scripts/code-shape.py check

# cargo-deny (deny.toml): licenses, bans (no wildcard versions; duplicate versions are only warned
# about) and sources (crates.io only). Run `cargo deny check` by hand for the inclusion graphs.
# Advisories are not checked here: they need the RustSec database online (the release workflow
# runs `cargo deny check advisories`).
deny: tools
	cargo deny check --hide-inclusion-graph licenses bans sources

# The Dockerfile, linted (no Docker engine is needed; the image's build stage runs `make operator`).
image-lint: tools
	$(CURDIR)/.venv/bin/hadolint Dockerfile

# The GitHub workflows against their JSON schema (bundled with check-jsonschema), and the chart's
# default image and the documented chart reference against what the release workflow publishes.
workflows: tools
	$(CURDIR)/.venv/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(MANAGED_SECRETS_PYTHON) scripts/check-release.py

# The AWS side of event-driven refresh (EventBridge rule, SQS queue and policy, IAM), linted.
aws-templates: tools
	$(CURDIR)/.venv/bin/cfn-lint examples/events/*.cfn.yaml

# The operator alone, as the image builds it (Dockerfile): release, --locked, only this package.
operator:
	cargo build --release --locked -p managed-secrets

build:
	cargo build --workspace --bins

# Unit, emulator conformance, kubectl-driven, AWS emulator and end-to-end tests (one profile).
# The e2e tests run the operator as the chart's ServiceAccount and keep what it requested; the
# README's RBAC table is then checked against those requests (scripts/check-rbac.py).
RBAC_OBSERVED := $(CARGO_TARGET_DIR)/tmp/rbac-observed
unit: tools
	rm -rf $(RBAC_OBSERVED)
	cargo test --workspace --no-fail-fast
	$(MANAGED_SECRETS_PYTHON) scripts/check-rbac.py README.md $(RBAC_OBSERVED)

python-tests: build
	$(MANAGED_SECRETS_PYTHON) -m unittest discover -s tests/python -v

# The chart: lint, the values table in its README, renders (validated against the Kubernetes
# schemas), a misspelt value refused by values.schema.json; installed, upgraded and uninstalled
# by the real helm against the API emulator in python-tests (tests/python/test_chart.py).
chart:
	$(HELM) lint charts/managed-secrets
	$(MANAGED_SECRETS_PYTHON) scripts/chart-docs.py charts/managed-secrets --check
	! $(HELM) template ms charts/managed-secrets --set replicaCont=3 >/dev/null 2>&1
	$(HELM) template ms charts/managed-secrets --namespace managed-secrets \
	  --set metrics.serviceMonitor.enabled=true --set networkPolicy.enabled=true --set grafanaDashboard.enabled=true \
	  --set events.queueUrl=https://sqs.us-east-1.amazonaws.com/123456789012/managed-secrets-events \
	  --set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \
	  --set-json 'imagePullSecrets=[{"name":"regcred"}]' --set-json 'extraEnv=[{"name":"RUST_LOG","value":"info"}]' \
	  > $(CARGO_TARGET_DIR)/chart-render-all.yaml
	$(HELM) template ms charts/managed-secrets --namespace managed-secrets > $(CARGO_TARGET_DIR)/chart-render.yaml
	$(HELM) template ms charts/managed-secrets --namespace managed-secrets --set 'watchNamespaces={apps,payments}' \
	  --set serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/managed-secrets \
	  --set-json 'accessPolicy.rules=[{"namespaceSelector":{"matchExpressions":[{"key":"env","operator":"Exists"}]},"secrets":["$$(labels.env)/$$(namespace)/*"]}]' \
	  > $(CARGO_TARGET_DIR)/chart-render-ns.yaml
	$(HELM) template ms charts/managed-secrets --namespace managed-secrets --set accessPolicy.enforce=false > $(CARGO_TARGET_DIR)/chart-render-off.yaml
	$(HELM) template ms charts/managed-secrets --namespace managed-secrets --set replicaCount=1 --set leaderElection.enabled=false \
	  --set crds.install=false > $(CARGO_TARGET_DIR)/chart-render-single.yaml
	$(MANAGED_SECRETS_PYTHON) scripts/validate-rendered.py 1.33.0 $(CARGO_TARGET_DIR)/chart-render.yaml \
	  $(CARGO_TARGET_DIR)/chart-render-ns.yaml $(CARGO_TARGET_DIR)/chart-render-off.yaml \
	  $(CARGO_TARGET_DIR)/chart-render-all.yaml $(CARGO_TARGET_DIR)/chart-render-single.yaml

chart-docs:
	$(MANAGED_SECRETS_PYTHON) scripts/chart-docs.py charts/managed-secrets

# crdgen prints every CRD (YAML documents separated by ---); crds/ holds one file per CRD, and the
# chart a copy it renders as templates (so helm upgrade upgrades them).
CHART_CRDS := charts/managed-secrets/files/crds
crds: build
	$(CARGO_TARGET_DIR)/debug/managed-secrets crdgen | scripts/split-crds.py crds
	rm -f $(CHART_CRDS)/*.yaml && cp crds/*.yaml $(CHART_CRDS)/

# Checked the way the image builds them (the operator package alone, `make operator`), and the
# chart's copy both as files and as rendered by helm.
check-crds: operator
	@$(CARGO_TARGET_DIR)/release/managed-secrets crdgen | diff -u <(cat crds/managedsecrets.io_managedsecrets.yaml; echo ---; cat crds/managedsecrets.io_secretaccesspolicies.yaml) - \
	  || { echo "crds/ is out of date with src/crd/: run 'make crds'"; exit 1; }
	@diff -ru crds $(CHART_CRDS) || { echo "the chart's CRDs differ from crds/: run 'make crds'"; exit 1; }
	@$(HELM) template ms charts/managed-secrets | $(MANAGED_SECRETS_PYTHON) scripts/check-chart-crds.py crds

demo: tools build
	scripts/demo.sh

# The demo's walkthrough, without waiting for Ctrl-C (part of make test so the demo keeps working).
demo-check: build
	DEMO_NONINTERACTIVE=1 scripts/demo.sh

# cargo-fuzz on mapping, templates and durations for FUZZ_SECONDS (not part of make test). A crash
# leaves its input in fuzz/artifacts/render/; copy it to fuzz/regressions/render/ and make test
# replays it. RUSTC_BOOTSTRAP lets the stable toolchain take the sanitizer flags.
FUZZ_SECONDS ?= 300
FUZZ_TARGET_DIR ?= $(HOME)/.cache/managed-secrets/fuzz-target
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	cd fuzz && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) cargo fuzz run render -- \
	  -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=65536

clean:
	rm -rf .venv .tools

# The benchmark (not part of make test): release builds, then every scenario in both modes.
# Results: bench/results/*.json, results.md and calls-per-minute.png.
BENCH_ARGS ?=
bench: tools
	cargo build --release -p managed-secrets -p kube-emulator -p managed-secrets-bench
	BENCH_BIN_DIR=$(CARGO_TARGET_DIR)/release $(CARGO_TARGET_DIR)/release/managed-secrets-bench run $(BENCH_ARGS)
