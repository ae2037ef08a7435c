# Two entry points: `make demo` (pretrain on the embedded synthetic scenes, then report)
# and `make test`. Both create .venv and install what they need.
VENV ?= .venv
PYTHON ?= python3
# The local CPU wheel; elsewhere set e.g. TORCH_SPEC='torch>=2.3' for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: test demo install lint typecheck docs clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check '$(TORCH_SPEC)'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(BIN)/.installed

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# mypy over src/ with the settings in pyproject.toml ([tool.mypy]): every function annotated.
typecheck: install
	$(BIN)/mypy

# The documentation site (docs/, mkdocs.yml); --strict fails on broken links and pages missing from nav.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

test: lint typecheck docs
	$(BIN)/python -m pytest -q -m "not slow"

# resume=auto: a second `make demo` continues an interrupted demo, or just reports a finished one.
demo: install
	$(BIN)/guidedmae pretrain demo resume=auto
	$(BIN)/guidedmae report runs/demo
	@echo "demo run: runs/demo  (checkpoint: runs/demo/checkpoint-last.pt, logs: runs/demo/metrics.jsonl and" \
	      "runs/demo/tensorboard, pictures: runs/demo/pictures, curves: runs/demo/curves.png)"

clean:
	rm -rf $(VENV) runs build src/*.egg-info
