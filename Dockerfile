# syntax=docker/dockerfile:1
# The operator image. The build stage runs `make operator`, the same target `make test` runs
# (and checks the CRDs of), so the binary in the image is the one CI tested.
# Multi-arch: the release workflow builds linux/amd64 and linux/arm64 with buildx.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Only the operator package is built (--locked, release); the cache mounts keep rebuilds fast.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=private \
    make operator CARGO_TARGET_DIR=/src/target \
    && install -D -m 0755 /src/target/release/managed-secrets /out/managed-secrets

# glibc, CA certificates and a non-root user (65532), nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="managed-secrets" \
      org.opencontainers.image.description="Keeps Kubernetes Secrets in sync with AWS Secrets Manager and rolls out the workloads that use them" \
      org.opencontainers.image.source="https://github.com/managed-secrets/managed-secrets" \
      org.opencontainers.image.url="https://github.com/managed-secrets/managed-secrets" \
      org.opencontainers.image.documentation="https://github.com/managed-secrets/managed-secrets#readme" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="managed-secrets" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/managed-secrets /managed-secrets
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/managed-secrets"]
CMD ["run"]
