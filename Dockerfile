# Multi-stage build: compile with the full toolchain, run on a slim image as
# a non-root user. Configuration comes from the environment (or a
# helpline.toml mounted at /app/helpline.toml); see docs/configuration.md.
FROM rust:1.95-bookworm AS build
WORKDIR /build
# Dependencies first: this layer is reused until Cargo.toml or Cargo.lock
# change, so editing the sources rebuilds only the crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin helpline \
 && rm -rf src
COPY src src
COPY migrations migrations
COPY static static
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin helpline

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app helpline
WORKDIR /app
COPY --from=build /build/target/release/helpline /usr/local/bin/helpline
COPY static /app/static
ENV HELPLINE_BIND=0.0.0.0:3000 \
    HELPLINE_STATIC_DIR=/app/static \
    HELPLINE_LOG_FORMAT=json
USER helpline
EXPOSE 3000
# Healthy = ready to serve: database reachable and migrated, listener and
# workers running (GET /readyz). Migrations run at start-up, hence the grace.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["helpline", "probe"]
CMD ["helpline"]
