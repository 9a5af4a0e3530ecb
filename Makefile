# The commands of the README: `make demo`, `make test` and `make lint`. Each sets up .venv when missing
# (`make lint` runs the ruff that .[dev] pins, then mypy on src/).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# glibc's default allocator makes CPU training stall on page faults (9 vs 70 img/s measured);
# these two settings must be in the environment before Python starts.
export MALLOC_MMAP_THRESHOLD_ := 10000000000
export MALLOC_TRIM_THRESHOLD_ := 10000000000

.PHONY: demo test install lint bench clean kernels

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# The demo (synthetic v2) trains 5 models (CAM, CI-CAM, two teachers, the student) on 2 CPU cores: 2 epochs each on
# 1,600 of the 2,400 training images keeps it within 15 minutes, install included (benchmarks use more).
DEMO_OVERRIDES ?= optim.epochs=2 data.limit_train_images=1600

demo: $(STAMP)
	$(VENV)/bin/kdcicam demo --out demo_out $(DEMO_OVERRIDES)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src

# The evaluator's kernels compiled ahead of time (pip install does it too; this rebuilds them in place
# after an edit of src/kdcicam/evaluation/_kernels.py, which otherwise runs on numba's JIT until then).
kernels: $(STAMP)
	$(PY) -m kdcicam.evaluation._aot src/kdcicam/evaluation

bench: $(STAMP)
	$(PY) benchmarks/evaluator_speed.py
	$(PY) benchmarks/throughput.py --train-step
	$(PY) benchmarks/report.py

clean:
	rm -rf $(VENV) demo_out src/kdcicam/evaluation/_kernels_aot.*
