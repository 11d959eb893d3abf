# syntax=docker/dockerfile:1
# Build: docker build -t sluice .
# Run:   docker run -v $PWD/config:/etc/sluice -e SLUICE_CONFIG=/etc/sluice/example.yaml -p 9090:9090 sluice

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so code changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin sluice \
    && rm -rf src target/release/.fingerprint/sluice-*
COPY src ./src
RUN cargo build --release --locked --bin sluice && strip target/release/sluice \
    && mkdir -p /out/var/lib/sluice

# glibc + CA certificates + a non-root user (uid 65532), nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
# Checkpoints live here, owned by the runtime user: mount a volume to keep them across restarts.
COPY --from=build --chown=65532:65532 /out/var/lib/sluice /var/lib/sluice
WORKDIR /var/lib/sluice
ENV SLUICE_CHECKPOINT_DIR=/var/lib/sluice SLUICE_LOG_FORMAT=json
USER nonroot:nonroot
EXPOSE 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run"]
