# graylane-sidecar (the sidecar, and `init-iptables` for the init container) and the
# demo app. Build from the repository root:
#   docker build -f deploy/docker/sidecar.Dockerfile -t graylane .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# graylane_build_info{revision}: docker build --build-arg GRAYLANE_GIT_REVISION=$(git rev-parse HEAD)
ARG GRAYLANE_GIT_REVISION=unknown
ENV GRAYLANE_GIT_REVISION=$GRAYLANE_GIT_REVISION
# The whole workspace, as the README builds it: the sidecar's code layout
# (sidecar/layout/) names its functions as that build's feature set does.
RUN cargo build --release --locked --workspace --bins

# Slim Debian, not distroless: the init container runs iptables.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1337 graylane && useradd --uid 1337 --gid 1337 --no-create-home graylane
COPY --from=build /src/target/release/graylane-sidecar /src/target/release/graylane-demo-app /usr/local/bin/
# The sidecar runs as 1337, the UID init-iptables exempts; the init container
# overrides this with root and NET_ADMIN.
USER 1337:1337
# glibc's per-thread cache keeps 7 freed blocks of a size; with many HTTP/2 streams in
# flight most of a request's allocations then take malloc's slow path (7 % of an h2c
# or gRPC hop's instructions, bench/README.md). `graylane demo` and bench/proxy run
# the sidecar with the same setting (control-plane/src/cli/demo/procs.rs checks it).
ENV GLIBC_TUNABLES=glibc.malloc.tcache_count=256
EXPOSE 15000 15001 15006 15021
ENTRYPOINT ["/usr/local/bin/graylane-sidecar"]
