# managed-secrets: `make demo` runs the operator end to end on local emulators; `make test` runs
# everything CI runs. Both install what they need first (scripts/setup-tools.sh).
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/managed-secrets/target
export MANAGED_SECRETS_PYTHON ?= $(CURDIR)/.venv/bin/python
export KUBE_EMULATOR_BIN ?= $(CARGO_TARGET_DIR)/debug/kube-emulator
# The machine's kubectl first; the one unpacked by setup-tools only when there is none.
export PATH := $(PATH):$(CURDIR)/.tools/bin
HELM := $(CURDIR)/.tools/bin/helm

.PHONY: test tools lint build unit python-tests chart crds check-crds demo demo-check fuzz clean

test: tools lint build unit python-tests chart check-crds demo-check
	@echo "make test: all checks passed"

tools:
	@scripts/setup-tools.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

build:
	cargo build --workspace --bins

# Unit, emulator conformance, kubectl-driven, AWS emulator and end-to-end tests (one profile).
unit:
	cargo test --workspace --no-fail-fast

python-tests: build
	$(MANAGED_SECRETS_PYTHON) -m unittest discover -s tests/python -v

chart:
	$(HELM) lint charts/managed-secrets
	$(HELM) template ms charts/managed-secrets --namespace managed-secrets > $(CARGO_TARGET_DIR)/chart-render.yaml
	$(HELM) template ms charts/managed-secrets --namespace managed-secrets --set 'watchNamespaces={apps,payments}' \
	  --set serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/managed-secrets \
	  --set-json 'accessPolicy.rules=[{"namespaceSelector":{"matchExpressions":[{"key":"env","operator":"Exists"}]},"secrets":["$$(labels.env)/$$(namespace)/*"]}]' \
	  > $(CARGO_TARGET_DIR)/chart-render-ns.yaml
	$(HELM) template ms charts/managed-secrets --namespace managed-secrets --set accessPolicy.enforce=false > $(CARGO_TARGET_DIR)/chart-render-off.yaml
	$(MANAGED_SECRETS_PYTHON) scripts/validate-rendered.py 1.33.0 $(CARGO_TARGET_DIR)/chart-render.yaml \
	  $(CARGO_TARGET_DIR)/chart-render-ns.yaml $(CARGO_TARGET_DIR)/chart-render-off.yaml charts/managed-secrets/crds/*.yaml

# crdgen prints every CRD (YAML documents separated by ---); crds/ holds one file per CRD.
crds: build
	$(CARGO_TARGET_DIR)/debug/managed-secrets crdgen | scripts/split-crds.py crds
	rm -f charts/managed-secrets/crds/*.yaml && cp crds/*.yaml charts/managed-secrets/crds/

check-crds: build
	@$(CARGO_TARGET_DIR)/debug/managed-secrets crdgen | diff -u <(cat crds/managedsecrets.io_managedsecrets.yaml; echo ---; cat crds/managedsecrets.io_secretaccesspolicies.yaml) - \
	  || { echo "crds/ is out of date with src/crd/: run 'make crds'"; exit 1; }
	@diff -ru crds charts/managed-secrets/crds

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
