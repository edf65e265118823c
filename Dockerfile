# Production image: one eventlet worker per container; run several behind a load balancer with
# sticky sessions and PORTAL_MESSAGE_QUEUE=redis://... (see deploy/). Configuration is all PORTAL_*.

# Build the portal's wheel (code, templates, static files and migrations) with the locked build backend.
# The base image is named by tag, so a rebuild takes Debian's and Python's security updates; a deployment
# that must rebuild byte-for-byte pins it by digest (python:3.11-slim@sha256:...) and bumps that deliberately.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/pip.txt requirements/runtime.txt /tmp/
RUN pip install --no-cache-dir --require-hashes -r /tmp/pip.txt \
 && pip install --no-cache-dir --require-hashes -r /tmp/runtime.txt
COPY pyproject.toml README.md ./
COPY portal ./portal
COPY audit ./audit
COPY templates ./templates
COPY static ./static
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PORTAL_ENV=production
RUN groupadd --system --gid 10001 portal \
 && useradd --system --uid 10001 --gid portal --home-dir /app --shell /usr/sbin/nologin portal
WORKDIR /app
# Exactly the locked dependencies, every file checked against PyPI's hash (README, "Dependencies and the lock"),
# then the portal's own wheel, resolving nothing.
COPY requirements/pip.txt requirements/runtime.txt /tmp/
RUN pip install --no-cache-dir --require-hashes -r /tmp/pip.txt \
 && pip install --no-cache-dir --require-hashes -r /tmp/runtime.txt \
 && rm /tmp/pip.txt /tmp/runtime.txt
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels
COPY --chown=portal:portal run.py ./
USER 10001
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:5000/healthz', timeout=4).status == 200 else 1)"]
# Migrations are a separate step: docker run --rm <image> flask --app portal init-db
CMD ["python", "run.py", "--host", "0.0.0.0", "--port", "5000"]
