# Multi-stage build: compile with the full toolchain, run on a slim image as
# a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /build
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY static static
RUN cargo build --release --locked --bin helpline

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app helpline
WORKDIR /app
COPY --from=build /build/target/release/helpline /usr/local/bin/helpline
COPY static /app/static
ENV HELPLINE_BIND=0.0.0.0:3000 \
    HELPLINE_STATIC_DIR=/app/static
USER helpline
EXPOSE 3000
CMD ["helpline"]
