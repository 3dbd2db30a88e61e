# videolabel: the two commands of the README, and their parts.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
DEMO   ?= demo
# demo size: videos per digit of the embedded AV-Digits subset (each of its 30 recordings per digit
# appears in up to REUSE videos, each time with another handwritten image) and training epochs. The label
# solves follow the epochs (the tiny preset's 40 are for 30 epochs: 16 over the demo's 12); SOLVES=N
# sets them instead (benchmarks/RESULTS.md, "Label solves that follow the run's length")
PER_CLASS ?= 60
REUSE     ?= 2
EPOCHS    ?= 12
SOLVES    ?=

.PHONY: install demo test lint clean-demo gpu-bundle

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[test,cpu]'
	touch $@

install: $(VENV)/.installed

# Build AV-Digits from the embedded subset, then ingest -> train (tiny preset) -> assign -> evaluate.
demo: install
	$(PY) examples/avdigits/build.py --out $(DEMO)/avdigits --per-class $(PER_CLASS) --reuse $(REUSE) --size 64x64 --seconds 2 --seed 0
	$(VENV)/bin/videolabel ingest $(DEMO)/avdigits/videos --out $(DEMO)/cache --size 64x64 --frames 8 --fps 8 \
		--clips-per-video 2 --progress log
	rm -rf $(DEMO)/run
	$(VENV)/bin/videolabel train $(DEMO)/cache --out $(DEMO)/run --preset tiny --clusters 10 \
		--epochs $(EPOCHS) $(if $(SOLVES),--set n_solves=$(SOLVES)) --workers 0 --gt $(DEMO)/avdigits/labels.csv --progress log
	$(VENV)/bin/videolabel assign $(DEMO)/run --out $(DEMO)/selavi.parquet --workers 0
	$(VENV)/bin/videolabel assign $(DEMO)/run --out $(DEMO)/kmeans.parquet --method kmeans --workers 0
	$(VENV)/bin/videolabel evaluate $(DEMO)/selavi.parquet --gt $(DEMO)/avdigits/labels.csv
	$(VENV)/bin/videolabel evaluate $(DEMO)/selavi.parquet $(DEMO)/kmeans.parquet --gt $(DEMO)/avdigits/labels.csv

test: install
	$(PY) -m pytest -q

# ruff (pyflakes, pycodestyle, bugbear, isort, pydocstyle) and mypy, configured in pyproject.toml
lint: install
	$(PY) -m pip install -q -c constraints.txt ruff mypy
	$(PY) -m ruff check videolabel tests benchmarks examples docs
	$(PY) -m mypy

# What the GPU machine cannot make (no ffmpeg there): an AV-Digits cache ingested here, packed into
# .gpu_bundle/ (git-ignored); prints the device command and its carry list (benchmarks/gpu_suite.py)
gpu-bundle: install
	$(PY) benchmarks/gpu_bundle.py --out .gpu_bundle

clean-demo:
	rm -rf $(DEMO)
