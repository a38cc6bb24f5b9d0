# Two entry points (see README): `make demo` and `make test`. Both build their own venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
# The lower end of the transformers range pinned in pyproject.toml, tested in its own venv.
LOWER_VENV ?= .venv-lower
TRANSFORMERS_LOWER ?= 5.0.0

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: pip must never resolve a multi-GB CUDA build on its own.
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	touch $@

$(LOWER_VENV)/.installed: pyproject.toml
	python3 -m venv $(LOWER_VENV)
	$(LOWER_VENV)/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(LOWER_VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' transformers==$(TRANSFORMERS_LOWER)
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/teso demo $(ARGS)

test: $(VENV)/.installed $(LOWER_VENV)/.installed
	$(VENV)/bin/ruff check teso tests bench
	$(VENV)/bin/ruff format --check teso tests bench
	$(VENV)/bin/pytest -q $(ARGS)
	@echo "== the same suite on transformers $(TRANSFORMERS_LOWER), the lower end of the pinned range"
	$(LOWER_VENV)/bin/pytest -q -p no:cacheprovider $(ARGS)

bench: $(VENV)/.installed
	$(VENV)/bin/teso bench $(ARGS)

.PHONY: venv demo test bench
