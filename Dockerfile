# credit-ledger: a multi-stage build.
#
#   docker build -t credit-ledger .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=postgres://… -e LEDGER_ADMIN_TOKENS=… credit-ledger
#
# Build stage: the official Rust image, latest stable 1.x (Cargo.toml's rust-version, 1.89, is
# the oldest that builds the locked dependencies).
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, so that a change to the sources does not download them again.
COPY Cargo.toml Cargo.lock ./
RUN cargo fetch --locked

# What the build reads: build.rs, the sources, the migrations (embedded by sqlx::migrate!) and
# openapi.yaml (embedded by include_str! for `credit-ledger openapi`).
COPY build.rs openapi.yaml ./
COPY migrations ./migrations
COPY src ./src
RUN cargo build --release --locked --bin credit-ledger

# Runtime stage: Debian slim, the same Debian as the build image (glibc). Distroless would be
# smaller, but it has no shell and no HTTP client, and the binary has no health-check command,
# so the HEALTHCHECK below needs curl.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 credit-ledger \
 && useradd --system --uid 10001 --gid credit-ledger --home-dir /nonexistent \
      --no-create-home --shell /usr/sbin/nologin credit-ledger

COPY --from=build /src/target/release/credit-ledger /usr/local/bin/credit-ledger

USER 10001:10001
ENV LEDGER_LISTEN=0.0.0.0:8080
EXPOSE 8080

# /healthz answers while the process serves; `serve` listens only once migrations are applied.
# If you change LEDGER_LISTEN's port, change this URL too.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1

ENTRYPOINT ["credit-ledger"]
CMD ["serve"]
