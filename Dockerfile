# streamchat in a container:
#   docker build -t streamchat .
#   docker run -p 5282:5282 -e OPENROUTER_API_KEY=sk-or-... streamchat
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 \
    PORT=5282

WORKDIR /app
RUN useradd --create-home --uid 10001 streamchat

# Installed the way the Makefile installs it (pip, from pyproject.toml), without the test tools.
COPY pyproject.toml README.md ./
COPY streamchat ./streamchat
COPY app.py .env.example ./
RUN pip install --quiet .

USER streamchat
EXPOSE 5282
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"5282\")}/health', timeout=2)" || exit 1

CMD ["python", "app.py"]
