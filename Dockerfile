# syntax=docker/dockerfile:1
# Multi-stage: a static binary on a distroless, non-root base (~10 MB).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
# The client library is a module of its own that go.mod replaces with ./api/client.
COPY api/client/go.mod api/client/go.sum ./api/client/
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" \
      -o /out/tokenbroker ./cmd/tokenbroker \
 && mkdir -p /out/run/tokenbroker /out/var/lib/tokenbroker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tokenbroker /usr/local/bin/tokenbroker
COPY --from=build --chown=65532:65532 --chmod=0750 /out/run/tokenbroker /run/tokenbroker
COPY --from=build --chown=65532:65532 --chmod=0700 /out/var/lib/tokenbroker /var/lib/tokenbroker
ENV TOKENBROKER_SOCKET=/run/tokenbroker/tokenbroker.sock \
    TOKENBROKER_STATE_DIR=/var/lib/tokenbroker
VOLUME ["/run/tokenbroker", "/var/lib/tokenbroker"]
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tokenbroker"]
CMD ["serve"]
