# The stockops app image: the package, its flows, runbooks, dashboards and experiment; one image for the API, the
# dashboards, the Prefect workers and scheduler, and the MLflow and Prefect servers (same pinned versions everywhere).
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    STOCKOPS_DATA_DIR=/workspace/data \
    STOCKOPS_REPORTS_DIR=/workspace/reports

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY stockops ./stockops
RUN pip install -c constraints.txt . \
    && useradd --create-home --uid 10001 stockops \
    && mkdir -p /workspace && chown stockops /workspace
COPY settings.ini ./
COPY experiments ./experiments
COPY flows ./flows
COPY nbs ./nbs
COPY deploy ./deploy

USER stockops
VOLUME /workspace
EXPOSE 8000 8866 5000 4200
CMD ["stockops", "--help"]
