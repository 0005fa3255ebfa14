# Two commands for a fresh machine: `make demo` runs the main job, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch the project is tested with. On Linux PyPI serves it as a CUDA build (several GB); for a CPU-only
# install run with PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu. Another TORCH_SPEC needs `make clean` first.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo simulate test lint clean

$(BIN)/sae-backend: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/sae-backend

demo: install
	$(BIN)/sae-backend demo $(DEMO_ARGS)

simulate: install
	$(BIN)/sae-backend simulate --dataset digits --model sae,ae,classifier --strategy margin,random \
		--initial 50 --per-round 50 --rounds 5 --seeds 3 --epochs 60 --out runs/simulate-digits

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .label-studio runs
