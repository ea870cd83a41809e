# syntax=docker/dockerfile:1
# Multi-stage build of the one `sluice` binary.
# Stage 1 caches the dependency build; stage 2 builds our crates; stage 3 is a small runtime image.

FROM rust:1-bookworm AS deps
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tests tests
# Build dependencies only: replace our sources with stubs so this layer changes only with Cargo.lock.
RUN find crates tests -name '*.rs' -exec sh -c 'echo "fn main() {}" > "$1"' _ {} \; \
 && cargo build --release --locked -p sluice || true

FROM deps AS build
COPY crates crates
COPY tests tests
RUN find crates tests -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p sluice \
 && cp target/release/sluice /usr/local/bin/sluice

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /nonexistent --shell /usr/sbin/nologin sluice
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
USER sluice
EXPOSE 8080
# The simulator answers /healthz; later roles (worker, aggregator) serve it on their own listen address.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["sim", "--listen", "0.0.0.0:8080"]
