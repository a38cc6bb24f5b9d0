# Two entry points (see README): `make demo` and `make test`. Both build their own venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
# The lower end of the transformers range pinned in pyproject.toml, tested in its own venv.
LOWER_VENV ?= .venv-lower
TRANSFORMERS_LOWER ?= 5.0.0
# The release the main venv (demo, README numbers, golden fingerprint) uses; constraints.txt pins the
# rest of the numeric stack.
TRANSFORMERS ?= 5.25.0

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	# torch first, pinned: pip must never resolve a multi-GB CUDA build on its own.
	$(PIP) torch==2.13.0
	$(PIP) -c constraints.txt -e '.[dev]' transformers==$(TRANSFORMERS)
	touch $@

$(LOWER_VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(LOWER_VENV)
	$(LOWER_VENV)/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(LOWER_VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' transformers==$(TRANSFORMERS_LOWER)
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/teso demo $(ARGS)

# TESO_REQUIRE_GOLDEN: on the pinned software a missing golden fingerprint fails the suite (no skip).
test: $(VENV)/.installed $(LOWER_VENV)/.installed
	$(VENV)/bin/ruff check teso tests bench
	$(VENV)/bin/ruff format --check teso tests bench
	TESO_REQUIRE_GOLDEN=1 $(VENV)/bin/pytest -q $(ARGS)
	@echo "== the same suite on transformers $(TRANSFORMERS_LOWER), the lower end of the pinned range"
	TESO_REQUIRE_GOLDEN=1 $(LOWER_VENV)/bin/pytest -q -p no:cacheprovider $(ARGS)

bench: $(VENV)/.installed
	$(VENV)/bin/teso bench $(ARGS)

.PHONY: venv demo test bench
