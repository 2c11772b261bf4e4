# The README's two commands: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench crd iam constraints clean kube-bin

# The runtime dependencies at the versions in constraints.txt, as the image has them.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' --constraint constraints.txt
	touch $@

demo: $(STAMP)
	$(BIN)/flowexport demo

# Two processes (pytest-xdist): a file's tests together, tests/realkube/ (one control plane) as one.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/core.py

# After changing iam/operator-policy.json: the member role templates that carry it.
iam: $(STAMP)
	$(BIN)/python hack/member-role.py

crd: $(STAMP)
	$(BIN)/flowexport crd --write crds --chart-files charts/flowexport-operator/files

# After changing dependencies: resolve them afresh and pin them (then `make test` runs with them).
constraints:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	$(BIN)/python -m tests.deploy.runtime_deps > constraints.txt
	touch $(STAMP)

# kube-apiserver, kube-controller-manager and etcd built from the Go module proxy, for the
# tests against a real API server (tests/realkube/); cached by version, reused when present.
kube-bin:
	bash hack/kube-bin.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
