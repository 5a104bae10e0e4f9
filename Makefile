# Moltis Desktop. `make run` sets up what the app needs and runs it; `make test` sets up
# everything the tests need and runs lint and the whole suite. The set-up is idempotent.
VENV ?= .venv
BIN := $(VENV)/bin
export MOLTIS_TEST_CACHE ?= $(HOME)/.cache/moltis-desktop

.PHONY: install install-run run test lint bench bench-ui bench-desktop bench-voice bench-local clean

install:
	@scripts/install.sh test

install-run:
	@scripts/install.sh run

run: install-run
	$(BIN)/moltis-desktop

lint: install
	$(BIN)/ruff check moltis_desktop tests bench installer
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

test: install lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

bench: install
	$(BIN)/python bench/run_bench.py

bench-ui: install
	$(BIN)/python bench/bench_ui.py

bench-desktop: install
	$(BIN)/python bench/bench_desktop.py

bench-voice: install
	$(BIN)/python bench/bench_voice.py

bench-local: install-run
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r bench/requirements-local-llm.txt
	$(BIN)/python bench/bench_local_llm.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
