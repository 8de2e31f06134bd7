# owl2's everyday commands. The machine needs Python 3.10+ (with venv) and make; everything else comes
# from PyPI into .venv, pinned by requirements/lock.txt.
#
#   make demo      set up .venv from the lock (first time), then run the main job: `owl2 demo`
#   make test      set up .venv from the lock (first time), then run the test suite (what CI runs)
#   make lock      re-resolve inside setup.cfg's bounds, run the suite, and rewrite the lock if it passes
#   make upstream  the suite on the newest release of every dependency, in a throwaway venv
#
# Variables: PYTHON (default python3), DEMO_OUT (default runs/demo), ARGS (extra arguments for owl2 demo
# or pytest), e.g. `make demo ARGS="--seed 3" DEMO_OUT=runs/demo-3` or `make test ARGS="tests/models -x"`.

PYTHON ?= python3
VENV ?= .venv
LOCK := requirements/lock.txt
DEMO_OUT ?= runs/demo
ARGS ?=
BIN := $(VENV)/bin

.PHONY: env demo test lock upstream

env: $(VENV)/.installed

# Re-installed whenever the lock or the declared dependencies change.
$(VENV)/.installed: $(LOCK) setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# torch from PyPI is the CUDA build (several GB with its CUDA packages); it runs on the CPU.
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[dev]" || { echo "install failed; free disk space:"; df -h .; exit 1; }
	touch $@

demo: env
	$(BIN)/owl2 demo --out $(DEMO_OUT) $(ARGS)

# pytest's exit status 5 (no test collected) is a failure too.
test: env
	@$(BIN)/python -m pytest -q $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi; exit $$rc

lock:
	tools/check_upstream.sh --window --write-lock

upstream:
	tools/check_upstream.sh
