#!/usr/bin/env bash
# Build the three shopipe images from the one Dockerfile (context: the repository root).
#
#   make images                  buildah, no registry: a local Debian base made by mmdebstrap
#   BUILDER=docker make images   a Docker engine and the registry's python base (BASE_IMAGE)
#   bash scripts/images.sh clean remove the local image store (vfs copies every layer: it grows)
#
# The buildah store lives in .shopipe/containers; tests/e2e/test_images.py runs the images from
# the same store with podman. Its driver is overlay where the kernel lets us mount one (as root on
# most hosts: a layer costs its changes only), else vfs, which works anywhere but copies the whole
# tree for every layer (tens of minutes and gigabytes for these images); STORAGE_DRIVER forces one.
# The mmdebstrap base is cached outside the work tree (a fresh clone, as CI makes, reuses it);
# its name carries a hash of the recipe, so a changed recipe builds a new one.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REGISTRY="${REGISTRY:-localhost/shopipe}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)"
TAG="${TAG:-$VERSION}"
REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
BUILDER="${BUILDER:-buildah}"
SERVICES=(receiver worker operator)
STORE="$ROOT/.shopipe/containers"
CACHE="${SHOPIPE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shopipe/images}"
log() { echo "images: $*" >&2; }

overlay_works() {
    local d
    d="$(mktemp -d -p "$STORE")"
    mkdir -p "$d/l" "$d/u" "$d/w" "$d/m"
    if mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" 2>/dev/null; then
        umount "$d/m"
        rm -rf "$d"
        return 0
    fi
    rm -rf "$d"
    return 1
}

# The driver is chosen once per store and written down: podman must open it with the same one.
mkdir -p "$STORE"
if [ ! -s "$STORE/driver" ]; then
    driver="${STORAGE_DRIVER:-}"
    [ -n "$driver" ] || { overlay_works && driver=overlay || driver=vfs; }
    echo "$driver" >"$STORE/driver"
fi
STORE_FLAGS=(--root "$STORE/root" --runroot "$STORE/run" --storage-driver "$(cat "$STORE/driver")")

if [ "${1:-}" = clean ]; then
    buildah "${STORE_FLAGS[@]}" rm --all >/dev/null 2>&1 || true
    # Whatever is still mounted under the store (a killed build's layers) goes first.
    grep -o " $STORE/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    chmod -R u+w "$STORE" 2>/dev/null || true  # vfs layers hold read-only directories
    rm -rf "$STORE"
    exit 0
fi

# --- docker: the registry's base, nothing local ------------------------------------------------
if [ "$BUILDER" = docker ]; then
    for svc in "${SERVICES[@]}"; do
        docker build --pull -f "$ROOT/Dockerfile" ${BASE_IMAGE:+--build-arg BASE_IMAGE="$BASE_IMAGE"} \
            --build-arg SERVICE="$svc" --build-arg VERSION="$VERSION" \
            --build-arg REVISION="$REVISION" -t "$REGISTRY/shopipe-$svc:$TAG" "$ROOT"
        log "built $REGISTRY/shopipe-$svc:$TAG"
    done
    exit 0
fi

for tool in buildah mmdebstrap; do
    command -v "$tool" >/dev/null || { log "needs $tool (apt-get install buildah mmdebstrap)"; exit 1; }
done
BAH=(buildah "${STORE_FLAGS[@]}")

# --- the base: Debian bookworm with Python, made here (no registry is needed) ------------------
# Essential packages only (no apt, no perl) plus Python; merged /usr without the usrmerge package
# (which pulls in perl). python3-venv is there for the build stages' venvs; docs and locales go.
MM_ARGS=(--variant=essential --format=tar --include=python3,python3-venv,ca-certificates
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias')
SUITE=bookworm
BASE_KEY="$(printf '%s\n' "$SUITE" "${MM_ARGS[@]}" | sha256sum | cut -c1-12)"
BASE_TAR="$CACHE/base-$SUITE-$BASE_KEY.tar"
BASE_IMAGE="${BASE_IMAGE:-localhost/shopipe-base:$SUITE-$BASE_KEY}"
mkdir -p "$CACHE/debs"

if [[ "$BASE_IMAGE" == localhost/shopipe-base:* ]]; then
    if [ ! -s "$BASE_TAR" ]; then
        log "building the $SUITE base with mmdebstrap (once; cached in $CACHE)"
        # The host's apt sources (its mirror and proxy settings) where it has them; the .debs are
        # kept so that a rebuild downloads nothing.
        sources=()
        [ -f /etc/apt/sources.list.d/debian.sources ] && sources=(/etc/apt/sources.list.d/debian.sources)
        start=$SECONDS
        mmdebstrap "${MM_ARGS[@]}" \
            --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
            --setup-hook="sync-in '$CACHE/debs' /var/cache/apt/archives/" \
            --customize-hook="sync-out /var/cache/apt/archives '$CACHE/debs'" \
            "$SUITE" "$BASE_TAR.part" "${sources[@]}"
        mv "$BASE_TAR.part" "$BASE_TAR"
        log "base built in $((SECONDS - start)) s"
    fi
    if ! "${BAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
        ctr="$("${BAH[@]}" from --pull=never scratch)"
        "${BAH[@]}" add "$ctr" "$BASE_TAR" / >/dev/null
        "${BAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --cmd python3 "$ctr"
        "${BAH[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
        log "imported $BASE_IMAGE"
    fi
fi

# --- pip inside the build: the host's CA bundle and index, never baked into a layer ------------
# Only the build stages run pip; the settings come in as bind mounts and leave with the stage.
PIPCONF="$ROOT/.shopipe/images-pip.conf"
CA="$(python3 -c 'import ssl; print(ssl.get_default_verify_paths().openssl_cafile)')"
CA="${PIP_CERT:-${SSL_CERT_FILE:-$CA}}"
{
    echo "[global]"
    echo "cert = /run/shopipe-build/ca.pem"
    index="${PIP_INDEX_URL:-$(pip3 config get global.index-url 2>/dev/null || true)}"
    [[ "$index" == http* ]] && echo "index-url = $index"
} >"$PIPCONF"

start=$SECONDS
for svc in "${SERVICES[@]}"; do
    # --layers keeps every step's result: the second and third service reuse all but the last.
    "${BAH[@]}" build --layers --pull=never --isolation chroot --network host \
        --volume "$CA:/run/shopipe-build/ca.pem:ro" --volume "$PIPCONF:/etc/pip.conf:ro" \
        --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg SERVICE="$svc" \
        --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
        --file "$ROOT/Dockerfile" --tag "$REGISTRY/shopipe-$svc:$TAG" "$ROOT" >&2
    log "built $REGISTRY/shopipe-$svc:$TAG"
done
log "three images built in $((SECONDS - start)) s"

# --- sizes: uncompressed (the store's) and compressed (gzip'd layers, as a registry holds them).
# The three share every layer, so one push to an archive measures them all.
for svc in "${SERVICES[@]}"; do
    image="$REGISTRY/shopipe-$svc:$TAG"
    log "$image: $("${BAH[@]}" images --noheading --format '{{.Size}}' "$image" | head -1) uncompressed"
done
archive="$ROOT/.shopipe/shopipe-images.oci.tar"
rm -f "$archive"
"${BAH[@]}" push --quiet --compression-format gzip "$REGISTRY/shopipe-receiver:$TAG" \
    "oci-archive:$archive" >/dev/null
log "each image: $(($(stat -c %s "$archive") / 1000000)) MB compressed (gzip, all layers)"
rm -f "$archive"
