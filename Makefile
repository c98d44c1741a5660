# Two entry points: `make demo` (set up + run the main job) and `make test` (set up + run the tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build of torch that installs from the local wheel; CUDA users: see README.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# optional extras the tests exercise (backends, official scoring code); demo needs none of them
TEST_STAMP := $(VENV)/.installed-test
TEST_EXTRAS := onnx,openvino,int8,parity

.PHONY: setup demo test test-fast lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[dev,$(TEST_EXTRAS)]"
	touch $(TEST_STAMP)

setup: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh $(BIN)

# tests/interop (ONNX Runtime, OpenVINO) run in a pytest process of their own: see tests/conftest.py
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q tests/interop

test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not realdata"
	$(BIN)/python -m pytest -q -m "not slow and not realdata" tests/interop

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) out
