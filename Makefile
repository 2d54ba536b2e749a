# Every target creates .venv when it is missing, so each works on a fresh clone.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
EXTRAS  ?= dev,aer,ibm
PYTEST_FLAGS ?= -n 2 --dist loadgroup

.PHONY: setup demo test test-all lint bench clean chromium readme-results

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) examples/minilm_hybrid.py

lint: $(STAMP)
	.venv/bin/ruff check qgraph passes backends tests examples benchmarks
	.venv/bin/mypy

test: $(STAMP) lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_FLAGS) -m "not slow"

# The review-report screenshot test needs Debian's chromium; install it when we can (root
# with apt), otherwise that one test skips and says why.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get install -y -q chromium >/dev/null 2>&1 \
		    || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); } \
		|| echo "chromium not installed: the HTML screenshot test will skip"

test-all: $(STAMP) lint chromium
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_FLAGS)

# The README's figures of the paper's experiment come from the committed cpu run, never by hand.
readme-results: $(STAMP)
	$(PY) -m qgraph.reproduce.quote docs/results/cpu/results.json README.md

BENCH_STAMP := .venv/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS),bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run_all.py

clean:
	rm -rf .venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache
