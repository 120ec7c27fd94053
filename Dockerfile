# syntax=docker/dockerfile:1
# flowlogd container image: build with the Rust toolchain image, run on Debian slim as a
# non-root user. The image is ~100 MB (debian slim ~75 MB + CA certificates + the stripped
# flowlogd binary); everything is static Rust except glibc.
#
#   docker build -t flowlogd:0.1.0 .
#   docker run --rm -v /etc/flowlogd:/etc/flowlogd:ro -v flowlogd-state:/var/lib/flowlogd flowlogd:0.1.0
#
# The registry lives in the volume /var/lib/flowlogd (keep it: it is the read progress), the
# config is read from /etc/flowlogd/flowlogd.toml, /healthz /readyz /metrics listen on :9108.
# Every base image is pinned to a version tag (scripts/check-deploy.sh enforces it).

FROM rust:1.95.0-slim-trixie AS build
WORKDIR /src
# Only what the build reads (see .dockerignore): manifests, sources, the bench target.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# Cache mounts keep the crate registry and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo cargo build --release --locked --bin flowlogd \
    && install -D -m 0755 target/release/flowlogd /out/flowlogd

FROM debian:13.1-slim
# CA roots for HTTPS to Azure Storage and Elasticsearch; a fixed uid/gid so volume
# ownership is predictable.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 flowlogd \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/flowlogd --no-create-home \
        --shell /usr/sbin/nologin flowlogd \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/flowlogd \
    && install -d -m 0755 /etc/flowlogd
COPY --from=build /out/flowlogd /usr/local/bin/flowlogd

# Config overrides through the environment: listen on all interfaces inside the container
# (publish the port to choose who reaches it). Only FLOWLOGD_<section>__<key> names are
# allowed here: every FLOWLOGD_ variable is read as a config key.
ENV FLOWLOGD_HTTP__LISTEN=0.0.0.0:9108

USER 10001:10001
WORKDIR /var/lib/flowlogd
VOLUME ["/var/lib/flowlogd"]
EXPOSE 9108
STOPSIGNAL SIGTERM
# No curl in the image: bash's /dev/tcp asks /healthz for a 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9108 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS= read -r status <&3 && [[ $status == *' 200 '* ]]"]

LABEL org.opencontainers.image.title="flowlogd" \
      org.opencontainers.image.description="Ships Azure NSG and VNet flow logs from Blob Storage into Elasticsearch, one ECS document per flow tuple" \
      org.opencontainers.image.licenses="Apache-2.0"

ENTRYPOINT ["/usr/local/bin/flowlogd"]
CMD ["run", "--config", "/etc/flowlogd/flowlogd.toml"]
