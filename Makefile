# The README's two setup commands: `make demo` and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PIP_FLAGS ?= --disable-pip-version-check --quiet

.PHONY: install test demo lint bench clean

install:
	$(PIP) install $(PIP_FLAGS) -e ".[test]"

test: install
	$(PYTHON) -m pytest -q

demo: install
	bash workflows/demo.sh

lint: install
	$(PYTHON) -m ruff check geoseg tests bench

bench: install
	bash bench/run_all.sh

clean:
	rm -rf demo-out bench/out build *.egg-info
