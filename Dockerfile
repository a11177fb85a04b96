# One image for every place depthsearch runs in a container: the `create`, `worker` and
# `dashboard` services of docker-compose.yml, the pods of deploy/kubernetes, and Slurm sites
# that run containers (pyxis/enroot, Apptainer).
#   docker build -t depthsearch:latest .                           # CUDA 12.6 wheels (default)
#   docker build --build-arg TORCH_INDEX=cu128 -t depthsearch .    # another CUDA build of torch
#   docker build --build-arg TORCH_INDEX=cpu -t depthsearch:cpu .  # CPU only, much smaller
# The CUDA wheels carry their own CUDA runtime: the host needs only the NVIDIA driver (and the
# NVIDIA container toolkit, or Kubernetes' NVIDIA device plugin).
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="cu126"
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1

WORKDIR /app
RUN pip install "${TORCH_SPEC}" --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}"
COPY pyproject.toml README.md constraints.txt ./
COPY depthsearch ./depthsearch
# The releases CI tested (the lock); torch is the one installed above.
RUN pip install -c constraints.txt '.[mlflow]'
COPY studies ./studies

# A numeric user, so Kubernetes' runAsNonRoot can check it (deploy/kubernetes runs as 10001).
RUN useradd --create-home --uid 10001 depthsearch
USER 10001
ENTRYPOINT ["depthsearch"]
