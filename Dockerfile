# The hotkeys binaries in one image, as docker-compose.yml runs them (`docker compose build`,
# or `docker build -t hotkeys:latest .`).
#
# Stage 1 builds the five binaries from this checkout with the locked dependencies;
# librdkafka is compiled from its crate (a C compiler and make, no cmake); zstd and OpenSSL
# are Debian's, found with pkg-config (scripts/lib.sh BUILD_PACKAGES).
FROM rust:1.94-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config perl libzstd-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      -p access-producer -p hot-counter -p prewarm -p cache-sync -p hotctl

# Stage 2: a slim Debian runtime with the binaries on PATH and the default topology, run as
# an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libzstd1 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home hotkeys
COPY --from=build \
     /src/target/release/access-producer \
     /src/target/release/hot-counter \
     /src/target/release/prewarm \
     /src/target/release/cache-sync \
     /src/target/release/hotctl \
     /usr/local/bin/
# Where every binary looks for a topology without --topology (hotkeys::cli::SEARCH_PATH).
COPY topology/default.toml /etc/hotkeys/topology.toml
# cache-sync receive, hotctl dashboard
EXPOSE 8480 8490
USER hotkeys
CMD ["hotctl", "--help"]
