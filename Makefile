# Two commands matter: `make serve` and `make test`. Both create/refresh .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install serve test bench bench-seeds fuzz train-lenet verify clean-venv

install: $(STAMP)

# Re-installs only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

serve: $(STAMP)
	$(PY) -m app --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q

# wrk (Debian package) is the HTTP load generator; installed here when missing and we are root.
bench: $(STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq wrk; } \
		|| { echo "bench needs wrk: sudo apt-get install wrk"; exit 1; }
	$(PY) -m bench

# schemathesis against the service's OpenAPI schema for a few minutes; writes bench/results/fuzz.md.
fuzz: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,fuzz]'
	$(PY) -m bench.fuzz

bench-seeds: $(STAMP)
	$(PY) -m bench.lenet_seeds

train-lenet: $(STAMP)
	$(PY) -m training.lenet --promote

verify: $(STAMP)
	$(PY) -m models.registry verify

clean-venv:
	rm -rf $(VENV)
