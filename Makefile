# wormvault: the two commands a new user needs are `make run` and `make test`.
# Both bring up a private local PostgreSQL (scripts/devdb.sh) unless
# VAULT_DATABASE_URL / VAULT_TEST_DATABASE_URL point at one. devdb.sh makes
# two roles: an owner that migrates and a runtime login that serves (and
# that the tests connect as).

GO      ?= go
BIN     := bin/vault
# The version stamped into the binary (`vault version`).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
DEVDIR  := .devdb

.PHONY: build run test bench fuzz db db-stop vet fmt clean

build:
	$(GO) build -ldflags "-X main.stampedVersion=$(VERSION)" -o $(BIN) ./cmd/vault

# Start the dev database, initialise a dev vault once, print tokens and a
# curl example, and serve on VAULT_LISTEN (default 127.0.0.1:8420).
run: build
	@scripts/run.sh

# All tests, with the race detector, against a real PostgreSQL.
test:
	@scripts/test.sh

# Ingest benchmark with its physical baselines (durable raw disk, BLAKE3,
# PostgreSQL commits) in one run, under 5 minutes; writes docs/benchmarks.md
# (only between its bench markers). BENCHFLAGS adds flags, e.g.
# BENCHFLAGS='--pprof /tmp/vault-cpu.pprof'. bench creates a database, so
# with the dev database it uses the owner's URL (CREATEDB), not the runtime
# login's.
bench: build
	@if [ -z "$${VAULT_DATABASE_URL:-}" ]; then eval "$$(scripts/devdb.sh start | sed 's/^/export /')"; \
	  export VAULT_DATABASE_URL="$$VAULT_TEST_DATABASE_URL"; fi; \
	./$(BIN) bench --out docs/benchmarks.md $(BENCHFLAGS)

# Fuzz every parser of untrusted input longer than make test does, e.g.
# make fuzz FUZZTIME=5m.
fuzz:
	@FUZZTIME=$${FUZZTIME:-1m} scripts/fuzz.sh

db:
	@scripts/devdb.sh start

db-stop:
	@scripts/devdb.sh stop

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

clean:
	rm -rf bin
