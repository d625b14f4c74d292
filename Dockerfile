# One image for the API and both workers, CPU torch by default. GPU hosts: docker-compose.gpu.yml
# builds the embed worker's image with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX}
COPY pyproject.toml README.md alembic.ini ./
COPY config ./config
COPY services ./services
COPY workers ./workers
COPY migrations ./migrations
RUN pip install .
# The volumes' mount points exist in the image and belong to the user the processes run as: Docker
# gives a new named volume the ownership of the directory it is mounted on, so the model download
# into /models (HF_HOME) and the data directory are writable without root.
RUN useradd --create-home saekin \
    && mkdir -p /models /data \
    && chown saekin:saekin /models /data
ENV HF_HOME=/models SAEKIN_DATA_DIR=/data
USER saekin
EXPOSE 8000
# Listening on every interface needs SAEKIN_API_KEYS (or an explicit SAEKIN_ALLOW_NO_AUTH=true):
# saekin serve refuses to start otherwise.
CMD ["saekin", "serve", "--host", "0.0.0.0"]
