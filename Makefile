# model-router: `make run` serves the demo, `make test` runs the suite. Both set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
HOST   ?= 127.0.0.1
PORT   ?= 8000
DATA_PORT ?= 8001
# The shared tools checkout (CI clones it beside this repo).
SHARED ?= ../shared

.PHONY: install models run test faults fuzz soak lint bench clean container-smoke promtool-check api-docs

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

# The demo model repository: numpy-trained MLPs written as .tflite, deterministic.
models: $(STAMP)
	$(BIN)/python -m actors.build.demo_models --out models

# Serves conf/model_router_rules.yml with the demo models; no Redis needed. Port 8000 serves the
# whole API; 8001 is the data plane (inference only: /predict, /predict/batch, /health).
# The admin key lives in .admin_key (mode 600, git-ignored); send it as X-Admin-Key.
run: models
	@test -s .admin_key || (umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(24))" > .admin_key)
	@echo "admin key: see ./.admin_key (send as X-Admin-Key)"
	MODEL_ROUTER_ADMIN_KEY_FILE=.admin_key $(BIN)/python app.py --config conf/model_router_rules.yml --host $(HOST) --port $(PORT) --data-port $(DATA_PORT)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	@if command -v promtool >/dev/null 2>&1; then $(MAKE) --no-print-directory promtool-check; else echo "promtool not on PATH: skipping promtool-check"; fi
	$(BIN)/python -m pytest -q

# Every fault test, the long soak runs (marked slow) included; `make test` runs the fast subset.
faults: $(STAMP)
	$(BIN)/python -m pytest -q -m "" tests/faults

# Builds the Containerfile with podman, runs it next to a Redis container, waits for /health/ready, then asks it
# for one real prediction (PODCI_CHECK runs with PODCI_URL = the container's base URL). Installs podman if missing.
container-smoke: export PODCI_CHECK = set -o pipefail; curl -fsS "$$PODCI_URL/predict" -H 'Content-Type: application/json' \
  -d '{"asset_class": "crypto", "horizon_ms": 30000, "symbol": "ETH/USDT", "features": {"order_imbalance": 0.3, \
  "spread_bps": 1.2, "trade_flow": 0.5, "return_1s": 0.001, "volume_z": 0.1}}' \
  | python3 -c 'import json, sys; a = json.load(sys.stdin); p = a["prediction"]; \
  assert a["model"] == {"name": "tlob_tiny", "version": "1"} and p["signal"] in p["probabilities"], a; \
  assert abs(sum(p["probabilities"].values()) - 1) < 1e-3 and 0 < p["confidence"] <= 1, a; print("predict:", a)'
container-smoke:
	$(SHARED)/tools/podman-smoke.sh . 8000 /health/ready

# Alert rules: syntax and unit tests (promtool ships in the Debian package `prometheus`).
promtool-check:
	promtool check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && promtool test rules alerts_test.yml

# docs/api.md from the route table in actors/web/openapi.py (also served as GET /openapi.json).
api-docs: $(STAMP)
	$(BIN)/python -m actors.web.openapi > docs/api.md

bench: models
	$(BIN)/python bench/select_model.py
	$(BIN)/python bench/reload.py

clean:
	rm -rf $(VENV) models .pytest_cache .ruff_cache

# The long fuzz pass: thousands of examples per route (tests/fuzz/; `make test` runs a short pass).
# FUZZ_EXAMPLES overrides the count per test.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q tests/fuzz

# Mixed load against a real service process for SOAK_MINUTES (default 10): 5xx, lost switch events, RSS/fds.
SOAK_MINUTES ?= 10
soak: models
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)
