# Spears & Shields — the two commands of the quick start are `make book` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.coinfer-installed
# torch is installed on its own first: here (and in CI) pip takes these versions from local disk.
# On another machine pass e.g. TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
# for a small CPU build, or TORCH_SPEC="" to keep a torch that is already installed.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

# The real GTSRB: the workplace's shared copy when it exists, else whatever COINFER_DATA says
# (unset: the library downloads GTSRB to the user cache dir).
SHARED_DATA := $(wildcard ../shared/data/gtsrb)
ifneq ($(SHARED_DATA),)
export COINFER_DATA ?= $(abspath ../shared/data)
endif
export TQDM_DISABLE := 1
export PYTHONHASHSEED := 0

# One cell may train the victim from scratch: on a 2-core CPU without bf16 units (AVX2 only)
# that takes about half an hour, so cells get two hours.
CELL_TIMEOUT := 7200
NBVAL := --nbval --nbval-current-env --nbval-cell-timeout=$(CELL_TIMEOUT) --nbval-sanitize-with tests/nbval_sanitize.cfg
NOTEBOOKS := book/0*.ipynb book/assignments/solutions
# Both cores: pytest-xdist runs two workers; --dist loadfile keeps each notebook (and each test
# file) on one worker, so nbval's cells run in order in one kernel.  Every torch step fixes its own
# thread count, so results do not depend on how the work is spread.
JOBS ?= 2
XDIST := -n $(JOBS) --dist loadfile
# The order in which `make book` starts the chapters, two at a time: Chapter 1 trains the victim
# (both threads), the game notebooks need no model and run meanwhile; the others wait for the
# victim on its file lock, then run side by side.
BOOK_NOTEBOOKS := book/01_coinference.ipynb book/04_incentive.ipynb \
  book/assignments/solutions/a4_incentive.ipynb book/02_spears.ipynb book/03_shields.ipynb \
  book/03b_dp_toolbox.ipynb book/assignments/solutions/a2_spears.ipynb \
  book/assignments/solutions/a3_shields.ipynb book/assignments/solutions/a1_coinference.ipynb

# No third-party requests when reading: MathJax, require.js and the Jupyter widgets manager are
# fetched (exact versions, pinned in tools/vendor_assets.py) from the npm registry into
# $(VENDOR), which _config.yml copies into the HTML output.  Needs npm.
VENDOR := _build/vendor
VENDOR_STAMP := $(VENDOR)/.versions.json
# The browser test (tests/test_browser.py) opens every page of the rendered book in Debian's
# chromium; `make test` leaves it to `make test-browser`, which renders first.
BROWSER_MARK := -m "not browser"

.PHONY: help install vendor book book-render test test-unit test-browser bench clean sync

help:
	@echo "make book        build the HTML book in _build/html (executes every chapter)"
	@echo "make test        unit tests + nbval over the chapters and assignments"
	@echo "make book-render render the committed (nbval-verified) outputs without executing"
	@echo "make test-browser render, then open every page in chromium (tests/test_browser.py)"
	@echo "make vendor      fetch MathJax, require.js and the widgets manager from npm"
	@echo "make bench       run the benchmarks, report in benchmarks/results/"
	@echo "make sync        rewrite the Colab set-up cell of every notebook from _config.yml"

$(STAMP): pyproject.toml .ci/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if [ -n "$(TORCH_SPEC)" ] && ! $(PY) -c "import torch, torchvision" 2>/dev/null; then \
	  $(PY) -m pip install -q $(TORCH_SPEC); fi
	$(PY) -m pip install -q -c .ci/constraints.txt -e ".[book,test]"
	touch $@

install: $(STAMP)

$(VENDOR_STAMP): tools/vendor_assets.py tools/widgets-setup.js
	$(PY) tools/vendor_assets.py --dest $(VENDOR)
	touch $@

vendor: $(STAMP) $(VENDOR_STAMP)

book: $(STAMP) $(VENDOR_STAMP)
	@# jupyter-cache notices edited notebooks but not an edited library: start afresh then.
	@if [ -f _build/.jupyter_cache/global.db ] && \
	  [ -n "$$(find lib -name '*.py' -newer _build/.jupyter_cache/global.db | head -1)" ]; then \
	  echo "lib/ changed: clearing the execution cache"; rm -rf _build/.jupyter_cache; fi
	$(PY) -m coinfer.book execute --jobs $(JOBS) --timeout $(CELL_TIMEOUT) $(BOOK_NOTEBOOKS)
	$(VENV)/bin/jupyter-book build . -W --keep-going
	@echo "The book is in _build/html/index.html"

book-render: $(STAMP) $(VENDOR_STAMP)
	mkdir -p _build
	sed 's/execute_notebooks: cache/execute_notebooks: "off"/' _config.yml > _build/_config_render.yml
	$(VENV)/bin/jupyter-book build . -W --keep-going --config _build/_config_render.yml

test: $(STAMP)
	$(PY) -m pytest tests $(NOTEBOOKS) $(NBVAL) $(XDIST) $(BROWSER_MARK) -p no:cacheprovider

test-unit: $(STAMP)
	$(PY) -m pytest tests $(XDIST) $(BROWSER_MARK) -p no:cacheprovider

# Renders the committed outputs (as CI checks them), then tests that HTML in chromium; the
# screenshots of every page land in _build/screenshots/.
test-browser: book-render
	BOOK_HTML=_build/html $(PY) -m pytest tests/test_browser.py -p no:cacheprovider

bench: $(STAMP)
	$(PY) benchmarks/run.py

sync: $(STAMP)
	$(PY) -m coinfer.book sync

clean:
	rm -rf _build .pytest_cache
