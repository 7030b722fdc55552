#!/usr/bin/env bash
# Installs the Node MCP clients tests/test_mcp_workers.py runs (`.ci/run` calls this; so may a person):
#   package.json            -> $DIR/clients/node_modules: the TypeScript MCP SDK and MCP Inspector 0.15
#                              (the last on Node 20), run on the system's Node (Debian's nodejs: 18 on bookworm)
#   inspector2/package.json -> $DIR/inspector2/node_modules: MCP Inspector 2.x and the Node 22 it needs
#                              (npm's `node` package); its CLI has --header, which Inspector 0.15 lacks
# DIR is $ROOMS_MCP_CLIENTS_DIR, by default ~/.cache/rooms-tests/mcp-clients: outside the project, whose tree
# `openenv validate` refuses with node_modules' symbolic links in it and `openenv push` would upload whole.
# Each is `npm ci` from its package-lock.json; an install from the same lock file is kept (well under a second).
# As root, Debian's nodejs and npm are installed when node or npm is missing.
set -euo pipefail
cd "$(dirname "$0")"
DIR="${ROOMS_MCP_CLIENTS_DIR:-$HOME/.cache/rooms-tests/mcp-clients}"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "tests/mcp_clients: installing Debian's nodejs and npm"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    else
        echo "tests/mcp_clients: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
        exit 1
    fi
fi

# npm ci of the project in $1 into $2/node_modules, unless $2 was installed from the same package-lock.json.
install_locked() {
    local project="$1" target="$2"
    if cmp -s "$project/package.json" "$target/package.json" &&
        cmp -s "$project/package-lock.json" "$target/installed-package-lock.json"; then
        echo "tests/mcp_clients: $target is up to date"
        return
    fi
    echo "tests/mcp_clients: npm ci in $target"
    rm -f "$target/installed-package-lock.json"
    mkdir -p "$target"
    cp "$project/package.json" "$project/package-lock.json" "$target/"
    (cd "$target" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$project/package-lock.json" "$target/installed-package-lock.json"
}

install_locked . "$DIR/clients"
node --version
node "$DIR/clients"/node_modules/.bin/mcp-inspector --help >/dev/null

install_locked inspector2 "$DIR/inspector2"
# npm's `node` package fetches its binary in an install script: check that it ran.
node22="$DIR/inspector2/node_modules/.bin/node"
"$node22" --version | grep -q '^v22\.' || {
    echo "tests/mcp_clients: $node22 is not Node 22 (did npm skip install scripts?)" >&2
    exit 1
}
echo "MCP Inspector $("$node22" "$DIR/inspector2"/node_modules/.bin/mcp-inspector --version) on Node $("$node22" --version)"
