# model-router: `make run` serves the demo, `make test` runs the suite. Both set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install models run test lint bench clean promtool-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

# The demo model repository: numpy-trained MLPs written as .tflite, deterministic.
models: $(STAMP)
	$(BIN)/python -m actors.demo_models --out models

# Serves conf/model_router_rules.yml with the demo models; no Redis needed.
# The admin key lives in .admin_key (mode 600, git-ignored); send it as X-Admin-Key.
run: models
	@test -s .admin_key || (umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(24))" > .admin_key)
	@echo "admin key: see ./.admin_key (send as X-Admin-Key)"
	MODEL_ROUTER_ADMIN_KEY_FILE=.admin_key $(BIN)/python app.py --config conf/model_router_rules.yml --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	@if command -v promtool >/dev/null 2>&1; then $(MAKE) --no-print-directory promtool-check; else echo "promtool not on PATH: skipping promtool-check"; fi
	$(BIN)/python -m pytest -q

# Alert rules: syntax and unit tests (promtool ships in the Debian package `prometheus`).
promtool-check:
	promtool check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && promtool test rules alerts_test.yml

bench: models
	$(BIN)/python bench/select_model.py
	$(BIN)/python bench/reload.py

clean:
	rm -rf $(VENV) models .pytest_cache .ruff_cache
