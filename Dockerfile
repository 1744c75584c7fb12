# syntax=docker/dockerfile:1
# The three shopipe images, one process each, from this one file. Context: the repository root.
#   docker build --build-arg SERVICE=worker -t shopipe-worker .
#   make images        (buildah, a local Debian base, no registry: scripts/images.sh)
# Layers, the same in the three images: base, dependencies (requirements/image.txt, with
# hashes), shopipe's code. SERVICE selects the last stage, which sets only the command and labels.
#
# BASE_IMAGE: the official python:3.11.14-slim-bookworm, pinned by the digest of its multi-arch
# index; `make images` replaces it with a Debian bookworm base it makes with mmdebstrap. Either
# way the build stages and the runtime stage share the base, so the venvs' python is there.
ARG BASE_IMAGE=docker.io/library/python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
ARG SERVICE=receiver

# Few steps on purpose: each RUN or COPY is a layer, and buildah's vfs store (make images)
# copies the whole tree for each. pip's cache is left in the build stages, never shipped.
#
# Dependencies: exactly the locked files (hashes checked), wheels only. Bytecode is compiled here
# because the running container cannot write it (read-only root); unchecked-hash .pyc files stay
# valid whatever the copied files' times.
FROM ${BASE_IMAGE} AS deps
COPY requirements/image.txt /tmp/image.txt
RUN export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
 && python3 -m venv /opt/shopipe \
 && /opt/shopipe/bin/pip install --quiet --require-hashes --no-deps --only-binary :all: \
      --no-compile -r /tmp/image.txt \
 && /opt/shopipe/bin/pip uninstall --quiet --yes pip setuptools \
 && /opt/shopipe/bin/python -m compileall -q --invalidation-mode unchecked-hash /opt/shopipe/lib

# shopipe itself: a wheel built with the locked build tools, unpacked (a pure-Python wheel is its
# install tree) into a directory of its own so that its layer holds only shopipe's code. The
# context is what .dockerignore lets in: pyproject.toml, README.md, requirements/, services/.
FROM ${BASE_IMAGE} AS app
COPY . /src/
RUN export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
 && python3 -m venv /opt/build \
 && /opt/build/bin/pip install --quiet --require-hashes --no-deps -r /src/requirements/build.txt \
 && /opt/build/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /tmp/wheel /src \
 && /opt/build/bin/python -m zipfile -e /tmp/wheel/shopipe-*.whl /opt/shopipe/app \
 && python3 -m compileall -q --invalidation-mode unchecked-hash /opt/shopipe/app

# uid 10001 (the chart's) needs no passwd entry: nothing here looks its name up.
FROM ${BASE_IMAGE} AS runtime
COPY --from=deps /opt/shopipe /opt/shopipe
COPY --from=app /opt/shopipe/app /opt/shopipe/app
# Read-only root filesystem in Kubernetes: never write .pyc files at run time.
ENV PATH=/opt/shopipe/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/shopipe/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["python", "-m", "shopipe"]

# One stage per service: the command is all that differs (CMD cannot take a build argument).
FROM runtime AS receiver
EXPOSE 8080
CMD ["receiver"]

FROM runtime AS worker
EXPOSE 9090
CMD ["worker"]

FROM runtime AS operator
EXPOSE 9091
CMD ["operator"]

FROM ${SERVICE}
ARG SERVICE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="shopipe-${SERVICE}" \
      org.opencontainers.image.description="shopipe ${SERVICE}: a Shopify webhook pipeline that never loses a webhook" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/shopipe/shopipe"
