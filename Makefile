# Set-up and checks. Every target installs what it needs, so a bare clone works:
#   make run    start the gateway with its simulated feeds on 127.0.0.1:8000
#   make test   lint, then every test
#   make wheel  dist/realtime_gateway-*.whl, the dashboard inside: pip install it anywhere
#   make docs   regenerate docs/configuration.md from the settings (realtime.Config)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint pytest conformance wheel clean redis-deps nginx-deps docs

install: $(STAMP) web-install

# Reinstall whenever the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The log goes to stderr and, rotated, to logs/websocket.log (the spec's file; the
# folder is created), unless REALTIME_LOG_FILE names another file.
run: install
	REALTIME_LOG_FILE="$${REALTIME_LOG_FILE:-logs/websocket.log}" $(BIN)/realtime serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# bench-peers: the harness's smoke test runs every reference server; redis-deps: the
# multi-node tests run real redis-server processes; nginx-deps: the deployment tests
# run real nginx in front of the gateway.
pytest: install bench-peers redis-deps nginx-deps
	$(BIN)/pytest

test: lint pytest web-test web-e2e

# The browser side: web-install, web-test, web-e2e-deps, web-e2e.
include web/web.mk
# Benchmarks against the reference servers: bench, bench-quick, bench-peers; the gateway
# on Redis: bench-cluster, bench-cluster-quick.
include bench/bench.mk

# Debian's redis-server for the multi-node tests (tests/cluster), only if missing. The
# tests start their own servers on free ports and never use a system-wide one.
REDIS_SERVER ?= /usr/bin/redis-server
redis-deps:
	@if [ -x $(REDIS_SERVER) ]; then echo "$(REDIS_SERVER) is installed"; else \
	  echo "Installing Debian's redis-server for the multi-node tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	fi

# Debian's nginx for the deployment tests (tests/deploy, tests/cluster/test_nginx.py),
# only if missing. The tests run their own instances (their own prefix, config and free
# port, in the foreground) and never touch a system-wide one.
NGINX ?= /usr/sbin/nginx
nginx-deps:
	@if [ -x $(NGINX) ]; then echo "$(NGINX) is installed"; else \
	  echo "Installing Debian's nginx for the deployment tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; \
	fi

# TOKEN_COMMAND: for a server with authentication on, a command that prints a token
# (docs/conformance.md), e.g. TOKEN_COMMAND='.venv/bin/realtime token' with its secret set.
URL ?= ws://127.0.0.1:8000
TOKEN_COMMAND ?=
conformance: install
	$(BIN)/pytest tests/conformance --server-url=$(URL) $(if $(TOKEN_COMMAND),--token-command='$(TOKEN_COMMAND)')

# setup.py copies the built dashboard (web/dist) into the wheel, so `install` builds it
# first. pip builds in place, in build/, and setuptools never prunes build/lib: a
# module deleted since the last build would still be packed, so build/ goes first.
wheel: install
	rm -rf build dist
	$(BIN)/python -m pip wheel --no-deps --quiet --wheel-dir dist .

# docs/configuration.md is generated from realtime.Config; a test fails while it is stale.
docs: install
	$(BIN)/python -m realtime._reference > docs/configuration.md

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .pytest_cache .ruff_cache
	rm -rf web/node_modules web/dist web/test-results
