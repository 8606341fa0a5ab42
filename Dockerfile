# synthnet: put any application behind a synthetic network link.
#
#   docker build -t synthnet .
#
# Two stages: the build (a Rust toolchain with the wasm32 target: the built-in plugins
# are compiled to wasm by host/runtime/build.rs) and a small runtime with the binary
# alone. The runtime needs no compiler, no `ip` and no shell tools: `synthnet takeover`
# does its netlink work in-process. Plain Dockerfile syntax (no BuildKit-only features),
# so the legacy builder builds it too. Base images are ARGs; keep both on the same
# Debian suite (a newer builder would emit glibc symbols the runtime lacks).
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
RUN rustup target add wasm32-unknown-unknown
WORKDIR /src
COPY . .
# No debug line tables and no symbols in the shipped binary (a fraction of its size), and
# no test tooling (`demo`, `bench`, `bench-bridge` and the test kit: the default feature
# `tools`).
ENV CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked -p synthnet --no-default-features \
 && install -D -m 0755 target/release/synthnet /out/synthnet

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/synthnet /usr/local/bin/synthnet
# The API and UI, on the control network (publish it: -p 3000:80).
EXPOSE 80
# Needs --cap-add NET_ADMIN (veth, addresses, routes) and --cap-add NET_RAW (AF_PACKET);
# nothing else (works with --cap-drop ALL). SYNTHETIC_NETWORK=CIDR picks the interface
# to take over (default: the default route's); the application is ENTRY, the command
# after `--`, or /opt/bin/entry (none: run as a sidecar until stopped).
ENTRYPOINT ["/usr/local/bin/synthnet"]
CMD ["takeover", "--api", "0.0.0.0:80"]
