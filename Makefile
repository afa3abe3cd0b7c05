# Two commands: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: demo test test-real test-notebooks notebooks lint check-notes mathjax mermaid clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) "Classic Models/pipeline_demo.py" --threads 2 --rank-steps 2

test: $(STAMP) mathjax mermaid
	$(PY) -m pytest -q -m "not slow and not notebooks" tests

# Every demo as a notebook for a reader: demo.ipynb next to each demo.py (git-ignored; the `# %%`
# script stays the source). Open one with `jupyter lab "Classic Models/Recall/SASRec/demo.ipynb"`.
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --quiet --to ipynb --set-kernel python3 "Classic Models"/*/*/demo.py \
	  "Classic Models/pipeline_demo.py"
	@ls "Classic Models"/*/*/demo.ipynb "Classic Models/pipeline_demo.ipynb" | wc -l | xargs echo "notebooks written:"

# Executes all 23 demos and the pipeline as notebooks (jupytext -> nbclient, fresh kernel, temp folder).
test-notebooks: $(STAMP)
	$(PY) -m pytest -q -m notebooks tests/test_notebooks.py

# MathJax 3 (the engine GitHub renders maths with) for the notes' formula check; optional: without node
# or the npm registry the check is skipped with its reason printed.
mathjax:
	@test -d $(VENV)/node/node_modules/mathjax-full || { command -v npm >/dev/null \
	  && npm install --silent --no-audit --no-fund --prefix $(VENV)/node mathjax-full@3.2.2 >/dev/null 2>&1 \
	  || echo "mathjax-full not installed (needs node/npm): the MathJax render check will be skipped"; }

# mermaid's parser (with jsdom for its window) for the diagrams' parse check; optional like MathJax.
mermaid:
	@test -d $(VENV)/node/node_modules/mermaid -a -d $(VENV)/node/node_modules/jsdom || { command -v npm >/dev/null \
	  && npm install --silent --no-audit --no-fund --prefix $(VENV)/node mermaid@11.17.2 jsdom@24.1.3 >/dev/null 2>&1 \
	  || echo "mermaid not installed (needs node/npm): the diagram parse check will be skipped"; }

# Every note against the template, its excerpts against the code, its numbers against the stored runs,
# and every formula rendered by MathJax 3.
check-notes: $(STAMP) mathjax
	$(PY) -m Utils.tools.notes_check --mathjax

# Real-data checks and long reproductions (need ../shared/data).
test-real: $(STAMP)
	$(PY) -m pytest -q -m "realdata or slow" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
