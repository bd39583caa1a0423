# Build the vault binary, then run it from a small image as a non-root user.
#
# Base images are pinned by digest (the multi-platform index), with the tag
# kept for people: a rebuild gets the same bytes, and a tag moved by
# someone else cannot change what we ship. The digests are the ones the
# Docker official-images project published in docker-library/repo-info
# (repos/golang/remote/1.26-bookworm.md: Go 1.26.7, August 2026;
# repos/debian/remote/bookworm-slim.md: the 2026-08-03 bookworm snapshot).
# To refresh (security updates land in new digests under the same tag):
#   docker buildx imagetools inspect golang:1.26-bookworm   # "Digest:" line
#   docker buildx imagetools inspect debian:bookworm-slim
# or read those two repo-info files, then replace the sha256 values below.
FROM golang:1.26-bookworm@sha256:38f30937ff0751bd8c202e53556168b9093302ee6d591e7e65a9d1b84a9d360c AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=container
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-X main.stampedVersion=${VERSION}" -o /out/vault ./cmd/vault

FROM debian:bookworm-slim@sha256:abd67ffcfa541b485a3dff59865ab629aa048a6c613e639d36e7456b0b229241
# CA certificates: the webhook and a TLS database connection verify their peers.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/wormvault vault \
    && mkdir -p /var/lib/wormvault && chown vault /var/lib/wormvault
COPY --from=build /out/vault /usr/local/bin/vault
COPY docker/entrypoint.sh /usr/local/bin/vault-entrypoint
USER vault
VOLUME /var/lib/wormvault
EXPOSE 8420
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s CMD ["vault", "health"]
ENTRYPOINT ["/usr/local/bin/vault-entrypoint"]
CMD ["serve"]
