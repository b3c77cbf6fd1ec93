#!/usr/bin/env bash
# Installs everything Hangar needs on a fresh Debian machine and builds the bundles. Idempotent.
# - Debian packages, when missing and root: the notebook runner's (python3-ipykernel, python3-nbclient)
#   and docking's (autodock-vina, openbabel, python3-matplotlib, pymol-data);
# - npm dependencies, which include Node.js 24 itself (the registry's `node` package) for older systems;
# - dist/agent.mjs, the one-file agent that instances run, and dist/hangar.mjs, the bundled CLI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python="${HANGAR_PYTHON:-/usr/bin/python3}"
missing=()
"$python" -c "import ipykernel, nbclient, nbformat" >/dev/null 2>&1 ||
  missing+=(python3 python3-ipykernel python3-nbclient python3-nbformat)
# Docking on the embedded default: Vina, openbabel for 3D ligands and PDBQT, matplotlib for the
# batch histogram, and pymol-data for the example receptor (1hpv.pdb).
command -v vina >/dev/null || missing+=(autodock-vina)
command -v obabel >/dev/null || missing+=(openbabel)
/usr/bin/python3 -c "import matplotlib" >/dev/null 2>&1 || missing+=(python3-matplotlib)
[ -f /usr/share/pymol/data/tut/1hpv.pdb ] || missing+=(pymol-data)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]} (Debian)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages: ${missing[*]}; install them (as root: apt-get install ...)," \
      "or set HANGAR_PYTHON to an interpreter with ipykernel and nbclient" >&2
  fi
fi

if ! command -v npm >/dev/null; then
  echo "setup: npm is missing; install Node.js (any version ≥ 18) with npm, then run this again" >&2
  exit 1
fi
if [ ! -x node_modules/.bin/node ] || [ ! -f node_modules/.package-lock.json ] ||
  [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies (includes Node.js 24)" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

node_modules/.bin/node scripts/build.ts >&2
echo "setup: ready (node $(node_modules/.bin/node --version))" >&2
