# Moltis Desktop. `make run` runs the app; `make test` sets up everything the tests need and
# runs lint and the whole suite. Both start with `make install`, which is idempotent.
VENV ?= .venv
BIN := $(VENV)/bin
export MOLTIS_TEST_CACHE ?= $(HOME)/.cache/moltis-desktop

.PHONY: install run test lint bench bench-ui bench-desktop bench-voice clean

install:
	@scripts/install.sh

run: install
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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
