# graylane-control and the graylane CLI. Build from the repository root:
#   docker build -f deploy/docker/control-plane.Dockerfile -t graylane-control .
FROM rust:1.95-bookworm AS build
# etcd-client's build script runs protoc.
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# graylane_build_info{revision}: docker build --build-arg GRAYLANE_GIT_REVISION=$(git rev-parse HEAD)
ARG GRAYLANE_GIT_REVISION=unknown
ENV GRAYLANE_GIT_REVISION=$GRAYLANE_GIT_REVISION
RUN cargo build --release --locked -p graylane-control --bins

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/graylane-control /src/target/release/graylane /usr/local/bin/
USER 65532:65532
EXPOSE 15010 15014 15443
ENTRYPOINT ["/usr/local/bin/graylane-control"]
