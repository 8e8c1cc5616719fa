# syntax=docker/dockerfile:1.7
#
# Plait's two images, from one build of the workspace:
#
#   docker build --target plaitd   -t plait/plaitd:dev .          # plaitd and plaitctl
#   docker build --target operator -t plait/plait-operator:dev .  # plait-operator
#
# Both run on distroless "cc" (glibc and libgcc, no shell, no package manager) as its
# nonroot user, 65532, which is also the user the chart and the operator run pods as.

ARG RUST_VERSION=1.95
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and the target directory live in cache mounts, so a rebuild after a small
# change recompiles only what changed. A cache mount is not part of the image, so the
# binaries are copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p plait-replica -p plait-cli -p plait-operator \
    && mkdir -p /out/bin /out/data \
    && cp target/release/plaitd target/release/plaitctl target/release/plait-operator /out/bin/

# A replica: plaitd serves gRPC on 7070 and Prometheus metrics on 9090, keeping its data
# in /data/plait (/data is a volume; the operator mounts a PersistentVolumeClaim there and
# uses the same subdirectory, since a fresh filesystem's root may hold lost+found).
# plaitctl is included for `kubectl exec` and the health check.
FROM ${RUNTIME_IMAGE} AS plaitd
COPY --from=builder /out/bin/plaitd /out/bin/plaitctl /usr/local/bin/
COPY --from=builder --chown=65532:65532 /out/data /data
# The defaults suit a container: listen on every interface, not loopback. The operator
# sets all of these itself.
ENV PLAIT_DATA_DIR=/data/plait \
    PLAIT_LISTEN=0.0.0.0:7070 \
    PLAIT_METRICS_LISTEN=0.0.0.0:9090
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
EXPOSE 7070 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s \
    CMD ["plaitctl", "--addr", "http://127.0.0.1:7070", "health"]
ENTRYPOINT ["plaitd"]
CMD ["serve"]

# The operator: `plait-operator run` reconciles PlaitClusters and PlaitBackups and serves
# /metrics, /healthz and /readyz on 8080; `plait-operator crd` prints the CRDs.
FROM ${RUNTIME_IMAGE} AS operator
COPY --from=builder /out/bin/plait-operator /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["plait-operator"]
CMD ["run"]
