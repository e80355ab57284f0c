# syntax=docker/dockerfile:1
# pushlog server image: `docker build -t pushlog .`
# Runs every role by default (`serve`); pick roles with `serve --roles ingest`.
# Set KAFKA_BROKERS for a real cluster (without it the embedded broker keeps
# its log under /var/lib/pushlog) and PUSHLOG_CRYPTO_KEYS shared by all nodes.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# The context has no .git, so the commit comes in as an argument:
#   docker build --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) .
ARG VERSION=dev
ARG COMMIT=
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
        -o /out/pushlog ./cmd/pushlog && \
    mkdir -p /out/data

# distroless static: no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pushlog /usr/local/bin/pushlog
COPY --from=build --chown=65532:65532 /out/data /var/lib/pushlog
USER 65532:65532
WORKDIR /var/lib/pushlog
# Inside a container listen on every interface, not only loopback.
ENV PUSHLOG_DATA_DIR=/var/lib/pushlog \
    PUSHLOG_HTTP_ADDR=:8082 \
    PUSHLOG_WS_ADDR=:8080
EXPOSE 8080 8082
VOLUME ["/var/lib/pushlog"]
ENTRYPOINT ["pushlog"]
CMD ["serve"]
