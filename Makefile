# kernelfleet — `make run` starts the gateway, `make test` installs everything and runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Debian packages the test suite drives for real: sshd for the SSH testbed hosts, Chromium for
# the JupyterLab browser test, iproute2 for the network namespaces, Debian's ipykernel for the
# impersonated (non-root) user's kernels on the testbed hosts (root's pyenv is not readable),
# sudo for impersonation by a non-root SSH user, PostgreSQL for the shared kernel store,
# Java 17 for the Spark standalone cluster of tests/spark (pyspark comes with the test extra),
# R and IRkernel for the R kernels of tests/specs, Maven to fetch the Hadoop YARN daemons of
# tests/yarn (it runs on the JRE above; nothing is compiled).
SYSTEM_PACKAGES := openssh-server chromium iproute2 procps python3-ipykernel sudo postgresql \
	openjdk-17-jre-headless r-base-core r-cran-irkernel maven

.PHONY: install system-deps toree-env yarn-deps run test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@missing=""; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v pgrep >/dev/null 2>&1 || missing="$$missing procps"; \
	/usr/bin/python3 -c "import ipykernel" >/dev/null 2>&1 || missing="$$missing python3-ipykernel"; \
	[ -x /usr/bin/sudo ] || missing="$$missing sudo"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v java >/dev/null 2>&1 || missing="$$missing openjdk-17-jre-headless"; \
	command -v R >/dev/null 2>&1 || missing="$$missing r-base-core"; \
	[ -d /usr/lib/R/site-library/IRkernel ] || missing="$$missing r-cran-irkernel"; \
	command -v mvn >/dev/null 2>&1 || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Apache Toree 0.5 (Scala kernels) needs Spark 3.5, not the Spark 4 of the test extra: it gets
# an environment of its own, used by tests/spark/test_toree_kernel.py.
TOREE_VENV ?= /opt/kernelfleet-test/toree-venv
toree-env:
	@$(TOREE_VENV)/bin/python -c "import toree, pyspark" >/dev/null 2>&1 || { \
	  echo "creating the Toree environment in $(TOREE_VENV)"; \
	  $(PY) -m venv $(TOREE_VENV) && \
	  $(TOREE_VENV)/bin/pip install -q "pyspark>=3.5,<3.6" apache-toree; }

# Hadoop 3.5.0's ResourceManager and NodeManager for tests/yarn, resolved from Maven Central by
# scripts/yarn-deps.sh (the pom is in the script) into $(KF_TEST_CACHE)/hadoop-3.5.0-<pom hash>;
# exported, so that tests/yarn finds them there too.
export KF_TEST_CACHE ?= /opt/kernelfleet-test
yarn-deps: system-deps
	@sh scripts/yarn-deps.sh

run: install
	$(BIN)/kernelfleet serve

test: install system-deps toree-env yarn-deps
	$(BIN)/ruff check kernelfleet tests benchmarks
	$(BIN)/ruff format --check kernelfleet tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check kernelfleet tests benchmarks
	$(BIN)/ruff format --check kernelfleet tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install system-deps yarn-deps
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
