# The README's two commands: `make train` and `make test`.
PYTHON ?= python3
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup train test test-all bench

setup:
	@[ -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz" ] || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)
	$(PYTHON) -m pip install -q -r requirements.txt

MINUTES ?= 20

# Train the default model (DC-GAN, Fashion-MNIST) for $(MINUTES) minutes, then export it.
train: setup
	$(PYTHON) train.py --model dcgan --preset dcgan_fashion_mnist --epochs 100 --minutes $(MINUTES)

test: setup
	$(PYTHON) -m pytest -m "not slow" -q tests

test-all: setup
	$(PYTHON) -m pytest -q tests

bench: setup
	$(PYTHON) benchmarks/throughput.py --repeats 5
	$(PYTHON) benchmarks/litert_modes.py
