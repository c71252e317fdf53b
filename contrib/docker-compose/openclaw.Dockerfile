# The OpenClaw gateway, installed from the npm registry (the version clawmedic's tests run against).
FROM node:24-bookworm-slim
RUN npm install --global openclaw@2026.9.6 && npm cache clean --force
USER node
WORKDIR /home/node
EXPOSE 18789
