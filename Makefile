# What a person runs is what CI runs: .ci/run calls `make test`.

CARGO ?= cargo
PYTHON ?= python3

.PHONY: run build test deps fixtures lint unit e2e bench fmt

## Run an all-in-one node on 127.0.0.1:9000 with its data in ./nimbus-data.
run:
	$(CARGO) run --release -p nimbus -- up

build:
	$(CARGO) build --release --workspace

## Install what the tests need, then run every test: lints, unit tests, end-to-end tests.
test: deps lint build fixtures unit e2e

deps:
	rustup component add rustfmt clippy >/dev/null 2>&1 || true
	rustup target add wasm32-wasip1 wasm32-wasip2
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
	$(PYTHON) -c "import boto3" 2>/dev/null || $(PYTHON) -m pip install --quiet boto3
	# CRC32C and CRC64NVME checksums need botocore's CRT extra, at the botocore already there.
	$(PYTHON) -c "import awscrt" 2>/dev/null || $(PYTHON) -m pip install --quiet --disable-pip-version-check \
		"botocore[crt]==$$($(PYTHON) -c 'import botocore; print(botocore.__version__)')"
	command -v aws >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet awscli
	# aws-lambda-ric (npm) builds its native client from source during the tests.
	@missing=""; for tool in cmake autoconf automake libtoolize g++ make; do \
		command -v $$tool >/dev/null 2>&1 || missing=yes; done; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && apt-get install -y -qq cmake autoconf automake libtool g++ make >/dev/null; fi
	# The console's tests drive Debian's Chromium through its chromedriver (nothing downloaded).
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; fi

fixtures:
	bash tests/fixtures/build.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --release --workspace

e2e: build fixtures
	$(PYTHON) -m pytest tests/e2e -q

## Benchmarks against the peers named in BENCHMARKS.md; prints a table.
bench:
	bash bench/run.sh

fmt:
	$(CARGO) fmt --all
