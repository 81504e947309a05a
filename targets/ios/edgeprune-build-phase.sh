#!/bin/sh
# edgeprune-build-phase.sh: an Xcode "Run Script" build phase. Copied into the app by `edgeprune integrate ios`
# (from edgeprune's targets/ios/); rewritten on every run.
#
# Add a Run Script phase before "Copy Bundle Resources" whose script is:
#     /bin/sh "$SRCROOT/Edgeprune/edgeprune-build-phase.sh"
# It rebuilds the models when their inputs changed (`edgeprune build --config` prints one "up to date" line
# otherwise) and copies them into Edgeprune/Models (no file changes when nothing changed). Without an
# edgeprune.yaml in the project, or without edgeprune installed, the models already in Edgeprune/Models are used
# (set EDGEPRUNE_REQUIRED=1 to make a missing edgeprune an error, e.g. on CI). With Xcode's user script
# sandboxing on, list Edgeprune/Models as an output of the phase or turn sandboxing off for it.
set -eu

ROOT="${SRCROOT:-$(cd "$(dirname "$0")/.." && pwd)}"
CONFIG="${EDGEPRUNE_CONFIG:-$ROOT/edgeprune.yaml}"
DIST="${EDGEPRUNE_DIST:-@@DIST@@}"
EXE="${EDGEPRUNE:-edgeprune}"

cd "$ROOT"
if [ ! -f "$CONFIG" ]; then
    echo "note: edgeprune: no $CONFIG; using the models in Edgeprune/Models"
    exit 0
fi
if ! command -v "$EXE" >/dev/null 2>&1; then
    if [ "${EDGEPRUNE_REQUIRED:-0}" = "1" ]; then
        echo "error: edgeprune: '$EXE' not found; pip install edgeprune (or set EDGEPRUNE to its path)"
        exit 1
    fi
    echo "warning: edgeprune: '$EXE' not found; using the models in Edgeprune/Models"
    exit 0
fi
"$EXE" build --config "$CONFIG"
"$EXE" integrate ios --dist "$DIST" --project "$ROOT"@@TARGET_ARGS@@
