# The README's two commands: `make train` and `make test`.
#
# Everything runs in the project virtualenv $(VENV): a stock Debian 12 python3 refuses
# `pip install` outside one (PEP 668, externally managed). `make setup` installs Debian's
# dataset-fashion-mnist and, when $(PYTHON) cannot create a virtualenv, python3-venv (one
# apt-get for both), creates $(VENV), and installs requirements.txt (the exact pins CI uses)
# and then this project into it: editable (`-e .`) unless INSTALL says otherwise (CI: INSTALL=.).
# Stamps in $(VENV) skip what is done: the pins are reinstalled when requirements.txt is newer,
# an editable install when pyproject.toml is, and a non-editable one (a snapshot) every time.
PYTHON ?= python3
VENV ?= .venv
INSTALL ?= -e .
PY := $(VENV)/bin/python
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET = $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: setup train test test-all bench

setup:
	@pkgs=; \
	[ -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz" ] || pkgs="dataset-fashion-mnist"; \
	[ -x "$(PY)" ] || $(PYTHON) -c "import ensurepip, venv" 2>/dev/null || pkgs="$$pkgs python3-venv"; \
	if [ -n "$$pkgs" ]; then \
	  echo "apt-get install $$pkgs"; \
	  $(APT_GET) update -qq && $(APT_GET) install -y -qq $$pkgs; \
	fi
	@[ -x "$(PY)" ] || { \
	  echo "$(PYTHON) -m venv $(VENV)"; \
	  $(PYTHON) -m venv $(VENV) || { \
	    rm -rf $(VENV); echo "venv failed; installing python3-venv and retrying"; \
	    $(APT_GET) update -qq && $(APT_GET) install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }; }
	@[ $(VENV)/.requirements -nt requirements.txt ] || { \
	  echo "$(PY) -m pip install -r requirements.txt"; \
	  $(PY) -m pip install -q -r requirements.txt && touch $(VENV)/.requirements; }
	@if [ "$(INSTALL)" = "-e ." ] && [ "$$(cat $(VENV)/.project 2>/dev/null)" = "-e ." ] \
	    && [ $(VENV)/.project -nt pyproject.toml ]; then :; else \
	  echo "$(PY) -m pip install $(INSTALL)"; \
	  $(PY) -m pip install -q $(INSTALL) && printf '%s\n' "$(INSTALL)" > $(VENV)/.project; \
	fi

MINUTES ?= 20

# Train the default model (DC-GAN, Fashion-MNIST) for $(MINUTES) minutes, then export it.
train: setup
	$(PY) train.py --model dcgan --preset dcgan_fashion_mnist --epochs 100 --minutes $(MINUTES)

# -P: the checkout's root is not put on sys.path, so the tests import the installed package.
# -n $(TEST_WORKERS) --dist loadfile: pytest-xdist runs whole test files in $(TEST_WORKERS) processes
# (a file's module fixtures, e.g. one traced StyleGAN2 step, are built once). Most tests are
# bound by single-threaded Python (tracing, subprocess start-up), so 2 processes on 2 cores
# overlap them (measured in the README's Tests section); TEST_WORKERS=0 runs in-process.
TEST_WORKERS ?= 2
PYTEST = $(PY) -P -m pytest -n $(TEST_WORKERS) --dist loadfile -q

test: setup
	$(PYTEST) -m "not slow" tests

test-all: setup
	$(PYTEST) tests

bench: setup
	$(PY) benchmarks/throughput.py --repeats 5
	$(PY) benchmarks/litert_modes.py
