# Production image: one eventlet worker per container; run several behind a load balancer with
# sticky sessions and PORTAL_MESSAGE_QUEUE=redis://... (see deploy/). Configuration is all PORTAL_*.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY portal ./portal
COPY audit ./audit
RUN pip install --no-cache-dir pip==25.3 \
 && pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres]' \
 && rm /wheels/patient_portal-*.whl

FROM python:3.11-slim
# Dependencies come from wheels; the portal itself runs from /app, where it finds templates/ and static/.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app PORTAL_ENV=production
RUN groupadd --system --gid 10001 portal \
 && useradd --system --uid 10001 --gid portal --home-dir /app --shell /usr/sbin/nologin portal
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY --chown=portal:portal run.py ./
COPY --chown=portal:portal portal ./portal
COPY --chown=portal:portal audit ./audit
COPY --chown=portal:portal templates ./templates
COPY --chown=portal:portal static ./static
USER 10001
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:5000/healthz', timeout=4).status == 200 else 1)"]
# Migrations are a separate step: docker run --rm <image> flask --app portal init-db
CMD ["python", "run.py", "--host", "0.0.0.0", "--port", "5000"]
