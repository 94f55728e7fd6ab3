# syntax=docker/dockerfile:1
# Accord: build the virtualenv in one stage, run as a non-root user in another.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml constraints.txt ./
COPY app ./app
# The project is installed in place, so app/, migrations/ and policies/ sit side by side.
RUN pip install -c constraints.txt -e .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ACCORD_HOST=0.0.0.0 \
    ACCORD_PORT=8000 \
    ACCORD_DATABASE_URL=sqlite:////var/lib/accord/accord.db
RUN groupadd --system accord && useradd --system --gid accord --home-dir /app accord \
    && mkdir -p /var/lib/accord && chown accord:accord /var/lib/accord
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=build /app /app
COPY migrations ./migrations
COPY policies ./policies
COPY alembic.ini ./
USER accord
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# Migrations run as their own step (`accord db upgrade`), not at every start.
CMD ["accord", "serve"]
