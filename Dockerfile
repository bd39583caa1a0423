# Build the vault binary, then run it from a small image as a non-root user.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/vault ./cmd/vault

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/wormvault vault \
    && mkdir -p /var/lib/wormvault && chown vault /var/lib/wormvault
COPY --from=build /out/vault /usr/local/bin/vault
COPY docker/entrypoint.sh /usr/local/bin/vault-entrypoint
USER vault
VOLUME /var/lib/wormvault
EXPOSE 8420
ENTRYPOINT ["/usr/local/bin/vault-entrypoint"]
CMD ["serve"]
