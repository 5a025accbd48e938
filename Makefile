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
# tests/yarn (it runs on the JRE above; nothing is compiled), and for the Kubernetes node of
# tests/k8s: containerd, runc and the CNI plugins, mmdebstrap for the kernel images, gcc for the
# pause program, openssl for the cluster's certificates, Debian's registry for image pulls, Go
# to build Kubernetes (scripts/k8s-deps.sh), Debian's Docker 20.10 for the engine of
# tests/docker, and Prometheus 2.42 for tests/platform/test_prometheus.py (which starts its own
# server on a free port; the Debian service the package may start is stopped at once), and
# HAProxy 2.6 for the gateway replicas of tests/ha (run in the foreground by the tests, on a
# free port; the Debian service's default config listens on no port).
SYSTEM_PACKAGES := openssh-server chromium iproute2 procps python3-ipykernel sudo postgresql \
	openjdk-17-jre-headless r-base-core r-cran-irkernel maven containerd runc \
	containernetworking-plugins mmdebstrap busybox-static gcc libc6-dev openssl docker-registry \
	docker.io prometheus haproxy

.PHONY: install system-deps toree-env yarn-deps k8s-deps images k8s-up k8s-down k8s-status \
	docker-up docker-down docker-status hub-deps run test \
	test-fast lint bench clean

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
	command -v containerd >/dev/null 2>&1 || missing="$$missing containerd"; \
	command -v runc >/dev/null 2>&1 || missing="$$missing runc"; \
	[ -x /usr/lib/cni/bridge ] || missing="$$missing containernetworking-plugins"; \
	command -v mmdebstrap >/dev/null 2>&1 || missing="$$missing mmdebstrap"; \
	[ -x /bin/busybox ] || missing="$$missing busybox-static"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc libc6-dev"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v docker-registry >/dev/null 2>&1 || missing="$$missing docker-registry"; \
	[ -x /usr/sbin/dockerd ] || missing="$$missing docker.io"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	[ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing || exit 1; \
	  case " $$missing " in *" prometheus "*) \
	    systemctl disable --now prometheus >/dev/null 2>&1 || invoke-rc.d prometheus stop >/dev/null 2>&1 || true;; \
	  esac; \
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

# Kubernetes v1.35.4 and etcd v3.6.16 for tests/k8s, built from the Go module proxy by
# scripts/k8s-deps.sh into $(KF_TEST_CACHE)/k8s-v1.35.4-etcd-v3.6.16-<recipe hash>/bin: about
# 7 min once per machine on 2 cores (Go's caches are removed after the build).
k8s-deps: system-deps
	@sh scripts/k8s-deps.sh

# configurable-http-proxy 5.3.0 (JupyterHub's proxy) for tests/hub, from the npm registry by
# scripts/hub-deps.sh into $(KF_TEST_CACHE)/configurable-http-proxy-5.3.0, where the tests find it.
hub-deps:
	@sh scripts/hub-deps.sh >/dev/null

# The kernel images (Debian bookworm root filesystems, no registry), cached by recipe hash.
images: install system-deps
	$(BIN)/kernelfleet image build python r busybox

# The test cluster of tests/k8s, for use by hand (kubectl, kernelspecs); the tests start the
# same one themselves when it is not up.
k8s-up: install system-deps k8s-deps
	$(BIN)/python -m tests.k8s.cluster up

k8s-down: install
	$(BIN)/python -m tests.k8s.cluster down

k8s-status: install
	$(BIN)/python -m tests.k8s.cluster status

# The Docker engine of tests/docker, for use by hand (DOCKER_HOST, kernelspecs); the tests start
# the same one themselves when it is not up. Loaded images stay in $(KF_TEST_CACHE)/docker-<version>.
docker-up: install system-deps
	$(BIN)/python -m tests.docker.engine up

docker-down: install
	$(BIN)/python -m tests.docker.engine down

docker-status: install
	$(BIN)/python -m tests.docker.engine status

run: install
	$(BIN)/kernelfleet serve

test: install system-deps toree-env yarn-deps k8s-deps hub-deps
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

bench: install system-deps yarn-deps k8s-deps
	$(BIN)/python -m benchmarks

# The full figures of issue 15 (benchmarks/README.md): 500 test kernels and 200 ipykernels on
# one gateway, a 10-minute 200-client run against kernelfleet and then jupyter_server, 10 soak
# runs of 3 minutes in one gateway, and a 2-minute replica failover; about 65 min on 2 cores.
.PHONY: bench-long
bench-long: install system-deps
	KF_BENCH_CLIENTS_SECONDS=600 KF_BENCH_SOAK_SECONDS=180 KF_BENCH_SCALE_IPYKERNELS=200 \
	  KF_BENCH_HA_SECONDS=120 $(BIN)/python -m benchmarks \
	  --only scale_500,scale_ipykernel,clients_200,soak_10,ha_failover --scenario-timeout 3600

clean:
	rm -rf $(VENV) build *.egg-info
