# clawmedic, built from this repository (context: the repository root). curl and procps (pkill) are the restart
# commands of the compose and Kubernetes recipes.
FROM python:3.12-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends curl procps && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN pip install --no-cache-dir /src && rm -rf /src
EXPOSE 18780
ENTRYPOINT []
