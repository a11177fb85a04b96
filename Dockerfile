# One image for the `create`, `worker` and `dashboard` services of docker-compose.yml.
# CUDA wheels by default (workers reserve a GPU); build with --build-arg TORCH_INDEX=cpu for CPU.
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="cu126"
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1

WORKDIR /app
RUN pip install "${TORCH_SPEC}" --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY depthsearch ./depthsearch
RUN pip install .
COPY studies ./studies

RUN useradd --create-home depthsearch
USER depthsearch
ENTRYPOINT ["depthsearch"]
