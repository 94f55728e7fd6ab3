# syntax=docker/dockerfile:1
# Accord: build the virtualenv in one stage, run as a non-root user in another.
# Checked by hadolint in `make test` (tests/test_deploy_manifests.py).

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
# A fixed uid and gid, 10001, the ones deploy/k8s runs the pods as (runAsUser,
# runAsGroup, fsGroup): a numeric USER lets the kubelet check runAsNonRoot, and
# files made on a volume belong to the same ids everywhere. --no-log-init: no
# sparse lastlog entry for a high uid. No home directory: the app writes only
# to /tmp and, with the image's SQLite default, /var/lib/accord.
RUN groupadd --gid 10001 accord \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home \
       --home-dir /app --shell /usr/sbin/nologin accord \
    && mkdir -p /var/lib/accord && chown 10001:10001 /var/lib/accord
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=build /app /app
COPY migrations ./migrations
COPY policies ./policies
COPY alembic.ini ./
USER 10001:10001
EXPOSE 8000
# Asks /healthz on the port `accord serve` binds: ACCORD_PORT as the app reads it
# (unset or empty: 8000), so a container run with another ACCORD_PORT stays healthy.
# Never through an HTTP proxy the environment may name; a refusal, a timeout or a
# non-2xx answer exits non-zero.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % (os.environ.get('ACCORD_PORT') or '8000'), timeout=2)"]
# Migrations run as their own step (`accord db upgrade`), not at every start.
CMD ["accord", "serve"]
