# MeshChat — `make run` starts the whole local mesh, `make test` runs everything CI runs.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/meshchat/target
CARGO ?= cargo
TEST_KAFKA_PORT ?= 19092
TEST_KAFKA_DIR ?= $(HOME)/.cache/meshchat/kafka-test
# where `make bench` writes its JSON, charts and report section
BENCH_OUT ?= docs

.PHONY: all build run test images e2e bench fuzz lint fmt crds openapi chart-docs kafka-start kafka-stop clean help

all: build

help:
	@echo "make run    - Kafka + fake (or real) LLM + three workers on :8080 :8081 :8082"
	@echo "make test   - format, lint, unit, property and integration tests on a real broker"
	@echo "make images - OCI image archives of the worker and operator in dist/images (no docker needed)"
	@echo "make bench  - raw broker, placement, handoff and failover measurements (docs/benchmarks.md, .json, PNGs)"
	@echo "make crds   - regenerate the ChatAgent CRD YAML"
	@echo "make chart-docs - regenerate charts/meshchat/README.md from its values.yaml"
	@echo "make openapi - regenerate docs/openapi.json (the public API, also served at /api/openapi.json)"
	@echo "make e2e    - the operator against a real cluster (KUBECONFIG: kind, k3d...), see docs/kubernetes.md"
	@echo "make lint   - rustfmt --check, clippy -D warnings and cargo deny"
	@echo "make fuzz   - each cargo-fuzz target for FUZZ_SECS (60) seconds (nightly; installs cargo-fuzz)"

build:
	@echo "==> cargo build (the first build compiles librdkafka and takes several minutes)"
	$(CARGO) build --workspace --bins

run: build
	@scripts/run-local.sh

# OCI archives of the worker and the operator without a docker engine (mmdebstrap + buildah):
# dist/images/worker.tar and dist/images/operator.tar
images:
	@scripts/images.sh

openapi:
	MESHCHAT_WRITE_OPENAPI=1 $(CARGO) test -q -p meshchat-worker --lib the_checked_in_document_is_current

crds:
	$(CARGO) run -q -p meshchat-crds --bin crdgen crds/chatagent.crd.yaml charts/meshchat/crds/chatagent.crd.yaml

# charts/meshchat/README.md from values.yaml's comments (helm-docs, built by tests/k8s/build.sh)
chart-docs:
	@bin=$$(tests/k8s/build.sh) && $$bin/helm-docs --chart-search-root charts

fmt:
	$(CARGO) fmt --all

# Request and Kafka record decoding, and the conversation store, under libFuzzer (fuzz/).
fuzz:
	@scripts/fuzz.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# licenses, banned and duplicated crates, sources (deny.toml; advisories need GitHub)
	@command -v cargo-deny >/dev/null || { echo "==> cargo install cargo-deny (first time: a few minutes)"; $(CARGO) install cargo-deny --locked --quiet; }
	$(CARGO) deny check bans licenses sources

kafka-start:
	scripts/kafka.sh ensure 9092

kafka-stop:
	scripts/kafka.sh stop 9092

# Tests get their own broker with a fresh data dir; it is stopped however the tests end.
# `build` first: the binaries as `make run` builds them (tests/tests/make_run.rs runs it), so
# that test finds them built.
test: lint build images
	@scripts/kafka.sh fetch
	@# Debian's Chromium and playwright-core/axe-core for the web pages' browser tests
	@scripts/browser.sh
	@echo "==> Kubernetes control plane for the operator tests (first time: built from the Go module proxy, 5-30 min)"
	@tests/k8s/build.sh >/dev/null
	@echo "==> cargo build --workspace --bins --tests"
	$(CARGO) build --workspace --bins --tests
	@scripts/kafka.sh stop $(TEST_KAFKA_PORT) $(TEST_KAFKA_DIR) 2>/dev/null || true
	@# and one a standalone `cargo test` started on the same port (its default data dir)
	@scripts/kafka.sh stop $(TEST_KAFKA_PORT) 2>/dev/null || true
	@rm -rf $(TEST_KAFKA_DIR)
	@scripts/kafka.sh start $(TEST_KAFKA_PORT) $(TEST_KAFKA_DIR)
	@set -o pipefail; status=0; \
	  MESHCHAT_TEST_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) $(CARGO) test --workspace --no-fail-fast -- --nocapture 2>&1 \
	    | tee $(CARGO_TARGET_DIR)/test-output.log || status=$$?; \
	  scripts/kafka.sh stop $(TEST_KAFKA_PORT) $(TEST_KAFKA_DIR); \
	  scripts/test-summary.sh $(CARGO_TARGET_DIR)/test-output.log; \
	  exit $$status

# The operator against the cluster KUBECONFIG names (kind, k3d, a real one); docs/kubernetes.md.
e2e: build
	@scripts/e2e.sh

# Measurements on a real broker with worker and balancer processes; see docs/benchmarks.md.
bench:
	@scripts/kafka.sh fetch
	@echo "==> cargo build --release (optimized binaries: the first build takes several minutes)"
	$(CARGO) build --release --workspace --bins
	@scripts/kafka.sh stop $(TEST_KAFKA_PORT) $(TEST_KAFKA_DIR) 2>/dev/null || true
	@# and one a standalone `cargo test` started on the same port (its default data dir)
	@scripts/kafka.sh stop $(TEST_KAFKA_PORT) 2>/dev/null || true
	@rm -rf $(TEST_KAFKA_DIR)
	@scripts/kafka.sh start $(TEST_KAFKA_PORT) $(TEST_KAFKA_DIR)
	@status=0; MESHCHAT_TEST_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) \
	  $(CARGO_TARGET_DIR)/release/meshchat-bench --out $(BENCH_OUT) $(BENCH_ARGS) || status=$$?; \
	  MESHCHAT_TEST_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) \
	  $(CARGO_TARGET_DIR)/release/auth-bench --out $(BENCH_OUT) || status=$$?; \
	  MESHCHAT_TEST_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) \
	  $(CARGO_TARGET_DIR)/release/limits-bench --out $(BENCH_OUT) || status=$$?; \
	  MESHCHAT_TEST_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) \
	  $(CARGO_TARGET_DIR)/release/chat-api-bench --out $(BENCH_OUT) || status=$$?; \
	  MESHCHAT_TEST_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) \
	  $(CARGO_TARGET_DIR)/release/index-bench --out $(BENCH_OUT) || status=$$?; \
	  $(CARGO_TARGET_DIR)/release/live-bench --out $(BENCH_OUT) || status=$$?; \
	  scripts/kafka.sh stop $(TEST_KAFKA_PORT) $(TEST_KAFKA_DIR); exit $$status

clean:
	$(CARGO) clean
	rm -rf .run
