# Build the vault binary, then run it from a small image as a non-root user.
# Base images are named by tag. For a production build, pin them by digest
# (docker buildx imagetools inspect golang:1.26-bookworm, then
# FROM golang:1.26-bookworm@sha256:...): the digests could not be looked up
# where this file is maintained, and a made-up digest would not build.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=container
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-X main.stampedVersion=${VERSION}" -o /out/vault ./cmd/vault

FROM debian:bookworm-slim
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
