# One image for every service: `serialtrack serve <service>` picks which one runs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY serialtrack ./serialtrack
# The archiver's volume (docker-compose.yml) starts as a copy of this directory, owned by the user.
RUN pip install . && useradd --create-home --uid 10001 serialtrack \
    && install -d -o serialtrack -m 700 /home/serialtrack/archive
USER serialtrack
# 0.0.0.0 inside the container is needed for the port mapping to reach the service; who can reach
# that port is decided by the mapping: docker-compose.yml publishes on 127.0.0.1 only.
ENV SERIALTRACK_HTTP_HOST=0.0.0.0 SERIALTRACK_DATA_DIR=/home/serialtrack/data
ENTRYPOINT ["serialtrack"]
CMD ["--help"]
