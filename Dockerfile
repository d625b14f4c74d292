# One image for the API and both workers. GPU hosts: build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
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
RUN useradd --create-home saekin
USER saekin
EXPOSE 8000
CMD ["saekin", "serve", "--host", "0.0.0.0"]
