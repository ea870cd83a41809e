# syntax=docker/dockerfile:1
# The one `sluice` binary in a small image. Every role runs from it: sim, worker, aggregator,
# validate, tail.
#
#   docker build -t sluice:dev .
#   docker run --rm -p 8080:8080 sluice:dev                    # the simulator (the default command)
#   docker run --rm sluice:dev validate --config /etc/sluice/worker.yaml
#   docker run --rm -v "$PWD/my-config:/etc/sluice:ro" -p 9090:9090 \
#       -e SLUICE__KAFKA__BROKERS=kafka:9092 -e SLUICE__HTTP__LISTEN=0.0.0.0:9090 \
#       -e SLUICE_HEALTH_PORT=9090 sluice:dev worker --config /etc/sluice/worker.yaml
#
# Stages:
#   plan     the workspace reduced to its manifests, Cargo.lock and one-line stub sources
#   deps     builds only the dependencies from the plan: this layer is reused until a manifest,
#            Cargo.lock or the set of source files changes (editing code does not rebuild it)
#   build    our crates on top of it
#   runtime  debian:bookworm-slim, the binary, a non-root user, the example config in /etc/sluice
#
# The image listens on nothing by itself: each role's address comes from its command line
# (`sim --listen`) or its config's http.listen (worker default 127.0.0.1:9090, aggregator
# 127.0.0.1:9091, so in a container set SLUICE__HTTP__LISTEN=0.0.0.0:PORT). The HEALTHCHECK
# asks http://127.0.0.1:$SLUICE_HEALTH_PORT/healthz: set SLUICE_HEALTH_PORT to the role's port.

ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-bookworm AS toolchain
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The workspace's release profile keeps line tables for profiling; the image does not need them
# (a third of the binary). Set here, so that every stage builds with the same settings and the
# dependency layer is reused by the final build.
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never

FROM toolchain AS plan
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tests tests
# Every manifest as it is, every .rs file replaced by the same stub (so every lib, bin, bench,
# example and test target cargo discovers still exists and compiles). The stub is written
# "{ }" because find's -exec ... + refuses any other argument containing "{}".
RUN mkdir -p /plan \
 && cp Cargo.toml Cargo.lock /plan/ \
 && find crates tests -name Cargo.toml -exec cp --parents {} /plan/ \; \
 && find crates tests -name '*.rs' -exec sh -c \
      'for f; do mkdir -p "/plan/$(dirname "$f")" && echo "fn main() { }" > "/plan/$f"; done' _ {} +

FROM toolchain AS deps
COPY --from=plan /plan ./
RUN cargo build --release --locked -p sluice

FROM deps AS build
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tests tests
# `sluice demo` compiles config/ in as its built-in configuration.
COPY config config
# The real sources may be older than the stubs' build: touch them so cargo rebuilds our crates.
RUN find crates tests -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p sluice \
 && install -m 0755 target/release/sluice /usr/local/bin/sluice \
 && /usr/local/bin/sluice --version

FROM debian:bookworm-slim AS runtime
# ca-certificates: HTTPS upstreams and proxies; curl: the HEALTHCHECK.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sluice --shell /usr/sbin/nologin sluice \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/sluice
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
# The example configuration (worker.yaml, targets/, fake example secrets): `validate` works out
# of the box. Mount your own over it: -v ./my-config:/etc/sluice:ro (or a ConfigMap).
COPY config /etc/sluice
# Writable working directory (file snapshots, if configured, can go here).
WORKDIR /var/lib/sluice
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
ENV SLUICE_HEALTH_PORT=8080
# sim 8080, worker 9090, aggregator 9091 (by convention; each is configurable).
EXPOSE 8080 9090 9091
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS -o /dev/null "http://127.0.0.1:${SLUICE_HEALTH_PORT}/healthz" || exit 1
# The worker and the aggregator finish cleanly on SIGTERM within shutdown.grace (default 25 s):
# give containers a longer stop timeout (docker stop -t 40, compose stop_grace_period: 40s,
# Kubernetes terminationGracePeriodSeconds: 40).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["sim", "--listen", "0.0.0.0:8080"]
