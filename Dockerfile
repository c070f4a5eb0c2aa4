# syntax=docker/dockerfile:1
# Mermin agent image: the BPF object built with clang, the Python environment built with uv,
# on a slim Debian 12 runtime with the system libbpf (the agent binds libbpf.so.1 via ctypes).
#   docker build -t <registry>/mermin:<version> .
# Then set image.repository/image.tag in the Helm chart (docs/operations.md).

ARG DEBIAN=debian:12-slim

# --- 1. the BPF object (same command as `make bpf` in the README) ------------------------------
FROM ${DEBIAN} AS bpf
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm make libbpf-dev linux-libc-dev libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY bpf/ bpf/
RUN make build/mermin.bpf.o

# --- 2. the Python environment (uv, locked, no dev dependencies) ------------------------------
FROM ${DEBIAN} AS venv
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_PYTHON=/usr/bin/python3 UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/mermin/venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY src/ src/
RUN uv sync --frozen --no-dev --no-editable

# --- 3. runtime ------------------------------------------------------------------------------
FROM ${DEBIAN}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libbpf1 iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=venv /opt/mermin/venv /opt/mermin/venv
COPY --from=bpf /src/build/mermin.bpf.o /usr/lib/mermin/mermin.bpf.o
COPY examples/manifests/mermin.yaml /usr/share/mermin/manifests/mermin.yaml
ENV PATH=/opt/mermin/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MERMIN_BPF_OBJECT=/usr/lib/mermin/mermin.bpf.o
# Runs as root: Kubernetes grants added capabilities (BPF, PERFMON, NET_ADMIN) only to root.
ENTRYPOINT ["mermin"]
CMD ["run"]
