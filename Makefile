# The verbs CI runs are the same one-line commands as here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
# Where notebooks' Jupyter comes from when the server runs as root: instances run
# under their own unprivileged uid, which cannot reach a venv under /root.
NOTEBOOK_ENV ?= /opt/demanager/notebook-env
NOTEBOOK_PYTHON_BASE ?= /usr/bin/python3
IS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo yes)
ifeq ($(IS_ROOT),yes)
export DEMANAGER_PROCESS__NOTEBOOK_PYTHON ?= $(NOTEBOOK_ENV)/bin/python
NOTEBOOK_DEPS := notebook-env
# Instances' users must pass through every parent of the data dir, which a checkout
# under a private home (/root is 0700) does not allow.
DATA_DIR ?= /var/lib/demanager
else
DATA_DIR ?= ./demanager-data
endif

.PHONY: image notebook-env run test test-suite test-fast lint typecheck bench bench-replicas bench-storage bench-events bench-peers install install-test browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test browser

# Browser tests drive Debian's Chromium (never a downloaded browser); without it they skip.
browser:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "note: /usr/bin/chromium is missing; the browser tests will be skipped"; }

# A world-readable environment with JupyterLab, built from the system Python, that
# every instance uid can execute (umask 022: files 0644, directories 0755).
notebook-env: $(NOTEBOOK_ENV)/.installed
$(NOTEBOOK_ENV)/.installed:
	umask 022 && $(NOTEBOOK_PYTHON_BASE) -m venv $(NOTEBOOK_ENV)
	umask 022 && $(NOTEBOOK_ENV)/bin/pip install --quiet 'jupyterlab>=4.2' 'ipykernel>=6.29'
	touch $@

# The image the docker and kubernetes backends run, built from Debian packages and PyPI with
# debootstrap and `docker import` (no registry); as root, with a Docker daemon (DOCKER_HOST).
image: install  ## build demanager/notebook:latest and tag it as the default catalog's images
	CATALOG_PYTHON=$(BIN)/python images/notebook/build.sh

run: install $(NOTEBOOK_DEPS)  ## serve on 127.0.0.1:8080 with SQLite and the process backend
	$(BIN)/demanager serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: install-test $(NOTEBOOK_DEPS)  ## lint, type-check and run the whole suite, with coverage
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 --cov --cov-report=term

test-suite: install-test $(NOTEBOOK_DEPS)  ## only the suite (CI runs it again on PostgreSQL)
	$(BIN)/pytest -n 2

test-fast: install-test $(NOTEBOOK_DEPS)  ## the suite without the slow (real Jupyter) tests
	$(BIN)/pytest -m "not slow and not browser"

lint: install-test
	$(BIN)/ruff check src tests bench

typecheck: install-test
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install-test  ## print the figures of bench/
	$(BIN)/python bench/spawn.py
	$(BIN)/python bench/spawn.py --backend docker  # says why it measures nothing without Docker
	$(BIN)/python bench/queue.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/rowjson.py
	$(BIN)/python bench/proxy.py
	$(BIN)/python bench/queue_estimates.py

# Minutes, not seconds: 10,000 instances through 1, 2 and 3 replicas, then stops while
# instances boot. PostgreSQL when DEMANAGER_BENCH_POSTGRES_URL is set, else SQLite.
bench-replicas: install-test  ## print the replicas' reconcile throughput and the stop latency
	$(BIN)/python bench/replicas.py

# Minutes too: 1,000 small files and a 1 GiB file through a local S3 server, each way.
bench-storage: install-test  ## print FolderSync's times against boto3's transfer manager
	$(BIN)/python bench/storage.py

# A few minutes: 200 subscribers on the project-wide event stream while 1,000 running
# instances are stopped; one subscriber is the baseline.
bench-events: install-test  ## print the event streams' fan-out and delivery latency
	$(BIN)/python bench/events.py

# Minutes too: JupyterHub (latest) and configurable-http-proxy are installed under the temp
# dir on the first run and kept; then both peers start the same JupyterLab and serve reads.
bench-peers: install-test $(NOTEBOOK_DEPS)  ## print demanager's figures next to JupyterHub's
	$(BIN)/python bench/peers.py

clean:  ## remove the venv and the ./demanager-data of a non-root run (never /var/lib/demanager)
	rm -rf $(VENV) ./demanager-data
