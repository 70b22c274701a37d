# syntax=docker/dockerfile:1
# One image for every tasklab role in every stage: `tasklab run ROLE --stage N`.
#
# Three stages, the layered-image idea done the Python way:
#   deps     wheels of the third-party dependencies, built from pyproject.toml alone: an edit to
#            the code does not rebuild (or download) them again.
#   build    the gRPC code generated from proto/ and tasklab's own wheel.
#   runtime  python slim with the wheels installed and nothing else: no compiler, no pip cache,
#            no source tree, no tests; runs as uid 10001.
# Pinned to a patch release of the python:3.11-slim line (Debian bookworm, the Debian the
# native stack's Redis and ZooKeeper versions come from); a rebuild does not change Python.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
# The requirement list is read from pyproject.toml (the package's dependencies and the extras
# every role needs, a stage5 extra included when there is one), so it cannot drift from it.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = p.get('optional-dependencies', {}); deps = p['dependencies'] + [d for e in ('stage2', 'stage3', 'stage4', 'stage5') for d in extras.get(e, [])]; print('\n'.join(sorted(set(deps))))" > requirements.txt \
    && pip wheel --no-cache-dir --wheel-dir /wheels --requirement requirements.txt \
    && cp requirements.txt /wheels/requirements.txt

FROM deps AS build
RUN pip install --no-cache-dir --no-index --find-links /wheels --requirement /wheels/requirements.txt
COPY . .
# The gRPC code is generated from proto/ (never kept in git), as `make setup` does natively,
# then packed into tasklab's wheel with the rest of the package.
RUN python -m common.rpc.codegen \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TASKLAB_ENV=docker \
    TASKLAB_CONFIG_DIR=/app/config
# A numeric, fixed uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER, and volume
# permissions can name it. No home directory and no shell: the roles need neither.
RUN groupadd --system --gid 10001 tasklab \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin tasklab
# The dependencies: their own layer, rebuilt only when the deps stage is (pyproject.toml
# changed). The wheels are mounted, not copied, so they take no room in the image.
RUN --mount=type=bind,from=deps,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels --requirement /wheels/requirements.txt
# tasklab itself: the layer a code change rebuilds, a few hundred kilobytes.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    pip install --no-cache-dir --no-deps --no-index /dist/tasklab-*.whl
WORKDIR /app
# The profiles (config/*.toml; TASKLAB_ENV picks one), owned by root and read-only to the roles:
# Kubernetes mounts its ConfigMap over this directory (deploy/kubernetes).
COPY --from=build --chown=root:root --chmod=0644 /src/config/*.toml /app/config/
USER 10001:10001

# Works for every role: the operator port's /health when TASKLAB_METRICS_ADDRESS is set (the
# process itself answers), else `tasklab health` (its Redis answers). Compose files may set a
# sharper one per role; Kubernetes uses its own probes (deploy/kubernetes) instead.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "common.cli.healthcheck"]

ENTRYPOINT ["tasklab"]
CMD ["run", "agent", "--stage", "1"]
