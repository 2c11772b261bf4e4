# syntax=docker/dockerfile:1
# The operator image: `flowexport run`, as a non-root user, on a read-only root filesystem.
#
#   docker build -t REGISTRY/flowexport-operator:0.1.0 --build-arg VERSION=0.1.0 .
#
# Two stages: the first builds the project's wheel and installs it with its dependencies at the
# versions the tests ran with (constraints.txt; all published as binary wheels, so no compiler
# is needed) into a virtual environment,
# then removes pip, setuptools and the simulators (`flowexport.sim`: the demo's stand-ins, whose
# packages are the `demo` extra) from it; the second copies only that environment onto a
# fresh slim image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY operator ./operator
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/flowexport \
 && /opt/flowexport/bin/pip install --only-binary=:all: --constraint constraints.txt /wheels/*.whl \
 && /opt/flowexport/bin/pip uninstall --yes pip setuptools \
 && rm -rf /opt/flowexport/lib/python3*/site-packages/flowexport/sim \
 && /opt/flowexport/bin/python -m compileall -q /opt/flowexport/lib \
 && /opt/flowexport/bin/flowexport --version

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="flowexport-operator" \
      org.opencontainers.image.description="Kubernetes operator that exports AWS VPC flow logs to the Illumio PCE as traffic flows" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# The bytecode was compiled in the build stage: nothing writes to the (read-only) root.
# FLOWEXPORT_REVISION: the revision label of flowexport_build_info.
ENV PATH=/opt/flowexport/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLOWEXPORT_REVISION=${REVISION}
RUN groupadd --system --gid 10001 flowexport \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin flowexport
COPY --from=build /opt/flowexport /opt/flowexport
USER 10001:10001
# 8080: liveness (/healthz); 9090: Prometheus metrics (/metrics).
EXPOSE 8080 9090
ENTRYPOINT ["flowexport", "run"]
CMD ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9090"]
