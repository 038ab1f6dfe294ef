# Benchmarks. Included from the top Makefile:  include bench/bench.mk
# Needs install (the .venv), taskset, Node 20 + npm; servers run on CPU 0, load on CPU 1.
#   make bench         the full comparison (tens of minutes), bench/results/<date>/
#   make bench-quick   the same scenarios, reduced (about 2-3 minutes), bench/results/<date>-quick/
#   make bench-peers   the reference servers' dependencies (Python extras + Node ws)
#   make bench-cluster        the gateway on Redis (docs/benchmarks.md, "The cluster"),
#                             bench/results/<date>-cluster/; needs redis-server (redis-deps)
#   make bench-cluster-quick  the same, reduced (about 2 minutes), <date>-cluster-quick/
BENCH_NODE  := bench/peers/node
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: bench bench-quick bench-peers bench-cluster bench-cluster-quick

bench-peers: $(BENCH_STAMP) $(BENCH_NODE)/node_modules/.package-lock.json

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

# mypy checks bench/ too, against the reference servers' libraries (FastAPI, uvicorn,
# websockets, matplotlib), so linting needs the Python side of bench-peers.
lint: $(BENCH_STAMP)

$(BENCH_NODE)/node_modules/.package-lock.json: $(BENCH_NODE)/package-lock.json
	cd $(BENCH_NODE) && npm ci --no-audit --no-fund

bench: install bench-peers
	$(BIN)/python -m bench.micro_protocol
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.run

bench-quick: install bench-peers
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.run --quick

bench-cluster: install bench-peers redis-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.cluster

bench-cluster-quick: install bench-peers redis-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.cluster --quick
