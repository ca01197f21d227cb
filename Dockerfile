# The llm-router image: llama.cpp's official llama-server plus the llmctl router, one image for
# both workloads (the entrypoint picks which one runs).
#
#   CPU:  docker build -t llm-router .
#   CUDA: docker build --build-arg LLAMA_VARIANT=server-cuda -t llm-router:cuda .
#
# Both start from the pinned official llama.cpp server image (config.py Images.llama_server);
# the router is installed into a virtual environment built in a separate stage on the same base,
# so the interpreter it links to is the one the final image has.
ARG LLAMA_CPP_RELEASE=b11312
ARG LLAMA_VARIANT=server
# The release workflow's CUDA variant starts from its own build of the same llama.cpp release
# with real sm_75 (T4) code, not PTX (.github/workflows/release.yml, job llama-server-cuda).
ARG LLAMA_IMAGE=

FROM ${LLAMA_IMAGE:-ghcr.io/ggml-org/llama.cpp:${LLAMA_VARIANT}-${LLAMA_CPP_RELEASE}} AS base
# The llama.cpp images are Ubuntu based; the router needs Python >= 3.11 (Ubuntu 24.04: 3.12).
# Ubuntu's package versions are not pinned: the release tag above pins the base instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

FROM base AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY templates ./templates
COPY charts ./charts
RUN python3 -m venv /opt/llmctl \
    && /opt/llmctl/bin/pip install --no-cache-dir ".[router]" \
    && /opt/llmctl/bin/llmctl --version

FROM base
LABEL org.opencontainers.image.title="llm-router" \
      org.opencontainers.image.description="llama.cpp llama-server and the llmctl OpenAI-compatible router" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/llmctl /opt/llmctl
COPY docker/entrypoint.sh /usr/local/bin/llmctl-entrypoint
RUN chmod 0755 /usr/local/bin/llmctl-entrypoint \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin llmctl \
    && mkdir -p /etc/llmctl /models \
    && chown 10001:10001 /models
ENV PATH=/opt/llmctl/bin:/app:$PATH \
    LLMCTL_ROUTER_CONFIG=/etc/llmctl/router.yaml \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /app
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/llmctl-entrypoint"]
CMD ["router"]
