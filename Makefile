# The README's two setup commands: `make demo` and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PIP_FLAGS ?= --disable-pip-version-check --quiet
# What an install depends on: the project metadata and the compiled kernels' sources. Python files
# need no reinstall (the install is editable), so a second `make demo` skips the Cython build.
INSTALL_INPUTS := pyproject.toml setup.py $(wildcard geoseg/*/*.pyx geoseg/*/*.h)
STAMP := build/.installed

.PHONY: install test demo lint bench clean reference-env qgis-plugin

install:
	@if [ -f $(STAMP) ] && [ -z "$$(find $(INSTALL_INPUTS) -newer $(STAMP) 2>/dev/null)" ] \
	   && [ "$$(cat $(STAMP))" = "$$(command -v $(PYTHON))" ] \
	   && (cd / && $(PYTHON) -c "import geoseg.inference._blend_ext, geoseg.vector._trace_ext, geoseg.evaluation._counts_ext, geoseg.benchmarks._png_ext") 2>/dev/null; then \
	  echo "geoseg is installed and up to date (make clean to reinstall)"; \
	else \
	  $(PIP) install $(PIP_FLAGS) -e ".[test]" && mkdir -p build && command -v $(PYTHON) > $(STAMP); \
	fi

# The tests' reference scorers get their own environment: cityscapesScripts 2.3.0 fails on numpy >= 2.3, and
# panopticapi-lite (the COCO panoptic scorer, pq_compute, as published on PyPI) pins numpy < 2 in its metadata
# although its code runs on numpy 2, so it is installed without its pins beside the scorer it needs.
REF_ENV := build/cityscapes-ref
$(REF_ENV)/.installed:
	$(PYTHON) -m venv $(REF_ENV)
	$(REF_ENV)/bin/pip install $(PIP_FLAGS) "numpy==2.2.6" "cityscapesscripts==2.3.0" "pillow>=10"
	$(REF_ENV)/bin/pip install $(PIP_FLAGS) --no-deps "panopticapi-lite==0.2.0"
	touch $@

reference-env: $(REF_ENV)/.installed

# Two processes (the machine's cores): every test is isolated (its own temporary folders, engine cache,
# Chromium profile and port 0 servers); worksteal evens out the long tests.
TEST_JOBS ?= 2
test: install reference-env
	$(PYTHON) -m pytest -q -n $(TEST_JOBS) --dist worksteal

demo: install
	bash workflows/demo.sh

lint: install
	$(PYTHON) -m ruff check geoseg tests bench

# The QGIS plugin zip (install it in QGIS: Plugins > Manage and Install Plugins > Install from ZIP); it needs no
# geoseg install to build: the plugin runs the geoseg executable.
qgis-plugin:
	$(PYTHON) qgis_plugin/build.py build/geoseg_qgis.zip

bench: install
	bash bench/run_all.sh

clean:
	rm -rf demo-out bench/out build *.egg-info
