# Two commands: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: demo test test-real lint clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) "Classic Models/pipeline_demo.py"

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

# Real-data checks and long reproductions (need ../shared/data).
test-real: $(STAMP)
	$(PY) -m pytest -q -m "realdata or slow" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
