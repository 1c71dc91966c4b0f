# syntax=docker/dockerfile:1
#
# One Dockerfile, two images, picked with --build-arg BINARY:
#
#   docker build --build-arg BINARY=manager -t nodefw-manager .
#   docker build --build-arg BINARY=agent   -t nodefw-agent .
#
# Both are a static Go binary on distroless/static: no shell, no package
# manager, no libc. The agent needs no nft binary either: it talks to
# nftables over netlink itself.

# manager or agent: the command under cmd/ to build, and the final stage.
ARG BINARY=manager

FROM golang:1.26 AS builder
ARG BINARY
ARG TARGETOS
ARG TARGETARCH
WORKDIR /workspace

# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/

RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o /out/${BINARY} ./cmd/${BINARY}

# The controller runs as the distroless nonroot user (65532).
FROM gcr.io/distroless/static:nonroot AS manager
WORKDIR /
COPY --from=builder /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]

# The agent runs as uid 0: a container's capabilities (the agent is given
# NET_ADMIN and nothing else) reach its process only when it is root. It is
# otherwise unprivileged: see config/agent/daemonset.yaml.
FROM gcr.io/distroless/static:latest AS agent
WORKDIR /
COPY --from=builder /out/agent /agent
USER 0:0
ENTRYPOINT ["/agent"]

# The image built: the stage named by BINARY.
FROM ${BINARY}
