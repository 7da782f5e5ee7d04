# One image for every predq process; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VAR_DIR=/data \
    BIND=0.0.0.0:8000 \
    FLOWER_ADDRESS=0.0.0.0 \
    FLOWER_PORT=5555

WORKDIR /srv/predq
COPY requirements.txt .
# requirements.txt installs the client package (client/) too.
COPY client/ client/
RUN pip install -r requirements.txt

COPY . .
RUN useradd --system --create-home predq && mkdir -p /data && chown predq /data
USER predq

EXPOSE 8000 5555
CMD ["python", "-m", "app.serve"]
