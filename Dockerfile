# importer: gearmand, OCR workers and the CLI in one image.
#   docker build -t importer:local .
#   docker compose up -d --scale worker=4
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# gearman-job-server: gearmand 1.1.20; stunnel4: mutual TLS in front of it;
# tesseract-ocr(-eng, -deu) and poppler-utils: OCR (English, German) and rasterizing pages;
# add a tesseract-ocr-LANG package here for each further --lang the workers must read.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        gearman-job-server \
        tesseract-ocr \
        tesseract-ocr-eng \
        tesseract-ocr-deu \
        tesseract-ocr-osd \
        poppler-utils \
        stunnel4 \
    && rm -rf /var/lib/apt/lists/*

# Only what the package needs, so a local .venv or data dir never ends up in the image.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY importer ./importer
COPY workers ./workers
RUN pip install . && rm -rf /src

# The image runs as `importer`; compose runs the worker as root (with SYS_ADMIN), so each
# document child drops to IMPORTER_CHILD_USER, nobody, which must exist: `id` fails the
# build otherwise (SECURITY.md, the document walls).
RUN id -u nobody \
    && groupadd --system --gid 10001 importer \
    && useradd --system --uid 10001 --gid importer --home-dir /var/lib/importer \
        --shell /usr/sbin/nologin importer \
    && mkdir -p /var/lib/importer \
    && chown importer:importer /var/lib/importer

USER importer
WORKDIR /var/lib/importer
ENV IMPORTER_DATA_DIR=/var/lib/importer

ENTRYPOINT ["importer"]
CMD ["--help"]
