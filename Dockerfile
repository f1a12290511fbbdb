# syntax=docker/dockerfile:1
# ami2ban: a sidecar that bans Asterisk attackers in nftables. Needs only CAP_NET_ADMIN:
#   docker run --cap-drop ALL --cap-add NET_ADMIN --network container:<asterisk> …

ARG NODE_VERSION=24

# ---- build: TypeScript, the libnftables addon and better-sqlite3, then dev dependencies pruned
FROM node:${NODE_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnftables-dev pkg-config python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY packages/nftables-napi/ packages/nftables-napi/
COPY bin/ bin/
COPY src/ src/
COPY bench/ bench/
# npm ci builds the addon (install script) and runs `prepare` (tsc); it fails if the addon cannot build.
RUN npm ci --no-audit --no-fund \
 && test -f packages/nftables-napi/build/Release/nftables_napi.node \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -rf packages/nftables-napi/build/Release/obj.target packages/nftables-napi/csrc src bench

# ---- runtime: the slim image, libnftables1 (and nft for operators' debugging), the built app
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ami2ban" \
      org.opencontainers.image.description="Bans Asterisk attackers from AMI security events in nftables sets with kernel timeouts" \
      org.opencontainers.image.source="https://github.com/ami2ban/ami2ban" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnftables1 nftables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules/ node_modules/
COPY --from=build /app/packages/ packages/
COPY --from=build /app/bin/ bin/
COPY --from=build /app/dist/ dist/
RUN ln -s /app/bin/ami2ban.js /usr/local/bin/ami2ban
ENV NODE_ENV=production \
    STATE_DIR=/var/lib/ami2ban \
    LOG_FORMAT=json
VOLUME /var/lib/ami2ban
# Runs as root inside the container, but with every capability dropped except NET_ADMIN
# (cap_drop: [ALL], cap_add: [NET_ADMIN]): a non-root user would not keep NET_ADMIN without
# file capabilities on node itself, which would hand it to every node process.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["ami2ban", "ready"]
ENTRYPOINT ["ami2ban"]
CMD ["run"]
