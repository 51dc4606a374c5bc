# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both install what they need first: Debian packages (as root), the virtual environment,
# and the project with its test extra. Each step is skipped when already done.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SITE    = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

.PHONY: setup system-deps test demo bench clean

setup: system-deps $(VENV)/.installed $(VENV)/.system-bcc

system-deps:
	@bash scripts/system-deps.sh

$(VENV)/.installed: pyproject.toml setup.py diag/bootstrap/coroscope-startup.pth runtime/_speedups.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

# bcc's Python module comes from Debian (python3-bpfcc; the PyPI "bcc" is another project).
# Expose that one package, and nothing else from the system site-packages, to the venv.
$(VENV)/.system-bcc: $(VENV)/.installed
	@mkdir -p $(VENV)/system-bcc
	@if [ -d /usr/lib/python3/dist-packages/bcc ]; then \
	    ln -sfn /usr/lib/python3/dist-packages/bcc $(VENV)/system-bcc/bcc; \
	    echo "$(abspath $(VENV)/system-bcc)" > $(SITE)/coroscope-system-bcc.pth; \
	    touch $@; \
	else echo "coroscope: python3-bpfcc is not installed; eBPF backends unavailable"; fi

# The runtime's tests that run again on its pure-Python paths (the suite uses the C accelerator
# where it is built: runtime/accel.py), on every version.
PURE_TESTS := tests/test_runtime_api.py tests/test_runtime_callbacks.py tests/test_runtime_hotpaths.py \
              tests/test_runtime_accel.py

# The whole suite on the default CPython, then what depends on the version on 3.12 and 3.13.
test: setup
	$(PY) -m pytest -q -p no:cacheprovider
	COROSCOPE_PURE_PYTHON=1 $(PY) -m pytest -q -p no:cacheprovider $(PURE_TESTS)
	@PURE_TESTS="$(PURE_TESTS)" bash scripts/test-other-pythons.sh

demo: setup
	$(PY) -m diag.cli doctor --demo

# Prints what it will take before it starts (about 9 minutes on the 2-core machine) and what it took.
bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
