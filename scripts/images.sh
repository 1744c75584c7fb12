#!/usr/bin/env bash
# Build the three shopipe images (context: repository root). Needs a running Docker engine.
#   REGISTRY=ghcr.io/you TAG=0.1.0 bash scripts/images.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REGISTRY="${REGISTRY:-ghcr.io/shopipe}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)"
TAG="${TAG:-$VERSION}"
REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"

if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
    echo "images: no Docker engine reachable here; run 'make images' where Docker runs" >&2
    exit 1
fi
for svc in receiver worker operator; do
    docker build --pull -f "$ROOT/services/$svc/Dockerfile" \
        --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
        -t "$REGISTRY/shopipe-$svc:$TAG" "$ROOT"
    echo "images: built $REGISTRY/shopipe-$svc:$TAG" >&2
done
