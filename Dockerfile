# One image for every tasklab role in every stage: `tasklab run ROLE --stage N`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TASKLAB_ENV=docker \
    TASKLAB_CONFIG_DIR=/app/config

WORKDIR /app
# .dockerignore keeps tests, docs, benchmarks and local state out of the image.
COPY . .
# The gRPC code is generated from proto/ at build time, as `make setup` does natively.
RUN pip install --no-cache-dir '.[stage2,stage3,stage4,stage5]' \
    && python -m common.rpc.codegen \
    && pip install --no-cache-dir --no-deps '.' \
    && useradd --create-home --uid 10001 tasklab
USER tasklab

ENTRYPOINT ["tasklab"]
CMD ["run", "agent", "--stage", "1"]
