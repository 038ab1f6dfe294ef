# The browser side (web/): included by the top Makefile.
#   make web-install    npm ci (from web/package-lock.json) and vite build, when out of date
#   make web-test       Vitest unit tests, tsc, and the stale generated-types check
#   make web-e2e-deps   Debian's Chromium for the end-to-end tests, only if missing
#   make web-e2e        Playwright (playwright-core) end-to-end tests against the real gateway
# Needs the Python venv (for `realtime schema` and the gateway): WEB_PY_STAMP is the
# top Makefile's install stamp, so these targets install it first.
WEB          := web
WEB_PY_STAMP ?= .venv/.installed
WEB_NPM      ?= npm
CHROMIUM     ?= /usr/bin/chromium
# npm ci writes this file; it is newer than the lock file exactly when node_modules is current.
WEB_MODULES  := $(WEB)/node_modules/.package-lock.json
# Inside dist/ so that deleting dist/ rebuilds it; a dot file, so the gateway never serves it.
WEB_BUILT    := $(WEB)/dist/.built
WEB_SOURCES  := $(shell find $(WEB)/src $(WEB)/scripts -type f 2>/dev/null) \
                $(WEB)/index.html $(WEB)/samples.html $(WEB)/vite.config.ts $(WEB)/tsconfig.json \
                $(wildcard protocol/*.py)

.PHONY: web-install web-test web-e2e-deps web-e2e web-clean

web-install: $(WEB_BUILT)

$(WEB_MODULES): $(WEB)/package-lock.json $(WEB)/package.json
	cd $(WEB) && $(WEB_NPM) ci --no-audit --no-fund
	touch $@

# The build checks that the generated protocol types match `realtime schema`, then
# type-checks, then bundles: a protocol change that the types do not follow fails here.
$(WEB_BUILT): $(WEB_MODULES) $(WEB_SOURCES) $(WEB_PY_STAMP)
	cd $(WEB) && $(WEB_NPM) run --silent build
	touch $@

web-test: $(WEB_MODULES) $(WEB_PY_STAMP)
	cd $(WEB) && node scripts/gen-types.mjs --check
	cd $(WEB) && npx tsc -p tsconfig.json --noEmit
	cd $(WEB) && npx vitest run

web-e2e-deps:
	@if [ -x $(CHROMIUM) ]; then echo "$(CHROMIUM) is installed"; else \
	  echo "Installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

web-e2e: web-install web-e2e-deps
	cd $(WEB) && CHROMIUM_PATH=$(CHROMIUM) npx vitest run --config vitest.e2e.config.ts

web-clean:
	rm -rf $(WEB)/node_modules $(WEB)/dist $(WEB)/test-results
