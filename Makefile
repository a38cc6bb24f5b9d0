# Two entry points (see README): `make demo` and `make test`. Both build their own venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: pip must never resolve a multi-GB CUDA build on its own.
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/teso demo $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check teso tests bench
	$(VENV)/bin/ruff format --check teso tests bench
	$(VENV)/bin/pytest -q $(ARGS)

bench: $(VENV)/.installed
	$(VENV)/bin/teso bench $(ARGS)

.PHONY: venv demo test bench
