# syntax=docker/dockerfile:1
# The syncwatch image the Helm chart runs. Build from the repository root:
#   docker build -t syncwatch:0.1.0 .
# Multi-stage: the builder installs the project into a virtualenv; the final stage gets only
# that virtualenv on a slim Python, runs as a non-root user and has no pip, compiler or build tools.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the install reads (see .dockerignore). Dependencies come from the lock file, pinned
# with hashes, so an image build is reproducible; then the project itself without resolving again.
COPY requirements.lock pyproject.toml README.md LICENSE ./
COPY exporter ./exporter
COPY collectors ./collectors
RUN pip install --require-hashes -r requirements.lock \
 && pip install --no-deps . \
 && pip uninstall -y pip setuptools wheel \
 && find /opt/venv -name '__pycache__' -prune -o -name '*.pyc' -print -delete >/dev/null \
 && syncwatch --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="syncwatch" \
      org.opencontainers.image.description="Observability sidecar for storefront / WMS / ERP integrations"
# The interpreter's own pip goes too: nothing is installed at run time.
RUN python -m pip uninstall -y pip setuptools wheel >/dev/null 2>&1 || true \
 && groupadd --system --gid 10001 syncwatch \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin syncwatch \
 && mkdir -p /var/lib/syncwatch /etc/syncwatch \
 && chown 10001:10001 /var/lib/syncwatch
COPY --from=build /opt/venv /opt/venv
# Defaults for a container: listen on all interfaces, keep the ledger on the data volume.
# The Helm chart mounts its own config over /etc/syncwatch.
COPY <<EOF /etc/syncwatch/config.yaml
listen:
  otlp_grpc: 0.0.0.0:4317
  otlp_http: 0.0.0.0:4318
  http: 0.0.0.0:9873
storage:
  data_dir: /var/lib/syncwatch
EOF
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /var/lib/syncwatch
VOLUME ["/var/lib/syncwatch"]
# OTLP/gRPC, OTLP/HTTP, and HTTP (/metrics, /healthz, /readyz, query API).
EXPOSE 4317 4318 9873
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9873/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["syncwatch"]
CMD ["run", "--config", "/etc/syncwatch/config.yaml"]
