#!/usr/bin/env bash
# Vendors the web UI's front-end dependencies from the npm registry into the Python
# package (no CDN at run time, no npm needed to run vtap). Records version and licence.
set -euo pipefail
cd "$(dirname "$0")/../web"
npm ci --no-audit --no-fund 2>/dev/null || npm install --no-audit --no-fund
dest=../src/vtap/api/static/vendor
mkdir -p "$dest"
cp node_modules/cytoscape/dist/cytoscape.min.js "$dest/"
cp node_modules/cytoscape/LICENSE "$dest/cytoscape.LICENSE"
version=$(node -p "require('./node_modules/cytoscape/package.json').version")
license=$(node -p "require('./node_modules/cytoscape/package.json').license")
cat > "$dest/VENDORED.md" <<TXT
# Vendored front-end dependencies

Copied from the npm registry by \`scripts/vendor.sh\` (web/package.json, web/package-lock.json).

| package | version | licence | file |
|---|---|---|---|
| cytoscape | $version | $license | cytoscape.min.js (licence text: cytoscape.LICENSE) |
TXT
echo "vendored cytoscape $version ($license) into $dest"
