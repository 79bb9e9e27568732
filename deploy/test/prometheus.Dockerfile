# Test-only stand-in for prom/prometheus (deploy/test/compose.yaml): Debian's prometheus package, with the official
# image's entrypoint, user and data directory, so that compose.yaml's command and volumes apply unchanged.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus \
    && chown 65534:65534 /prometheus
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
