# Everyday commands. `make check` is what CI runs (.ci/run); run it before you push.
# Details and habits: docs/development.md.

CARGO ?= cargo
# scripts/test.sh uses the same cargo.
export CARGO

.DEFAULT_GOAL := help
.PHONY: help test lint check fix dev bench

help:
	@echo 'make test   run every test: crate-graph check, then cargo nextest (scripts/test.sh)'
	@echo 'make lint   cargo fmt --check and clippy with -D warnings'
	@echo 'make check  lint, then test; read-only, what CI runs'
	@echo 'make fix    apply rustfmt and clippy fixes to the working tree'
	@echo 'make dev    run `meridian dev` (every service in one process)'
	@echo 'make bench  run the benchmarks (not part of CI)'

test:
	scripts/test.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Sequential on purpose: lint fails in seconds, tests take minutes; `make -j check` keeps the order.
check:
	$(MAKE) lint
	$(MAKE) test

fix:
	$(CARGO) fmt --all
	$(CARGO) clippy --workspace --all-targets --fix --allow-dirty --allow-staged

dev:
	$(CARGO) run --bin meridian -- dev

bench:
	$(CARGO) bench --workspace
