#!/bin/sh
# Build pushpool's Lambda package into a directory: the project and its dependencies for Lambda's Python
# 3.12 on x86_64 (manylinux wheels only, whatever this machine is), plus the default base job templates.
#
#   infra/build_lambda.sh OUT_DIR             # used by `sam build` (infra/lambda/Makefile)
#   infra/build_lambda.sh --zip OUT.zip       # used before `serverless deploy` (package.artifact)
#   infra/build_lambda.sh --lock              # rewrites infra/lambda/constraints.txt (`make lambda-lock`)
#
# Builds are pinned by infra/lambda/constraints.txt (pip constraints): what a deploy packages is what the
# commit was tested with, not whatever is newest that day. --lock resolves every extra afresh and pins it.
#
# PUSHPOOL_EXTRAS chooses the provider extras packaged (default "aws"; e.g. "aws,gcp", "aws,gcp,azure,modal").
# PYTHON is the interpreter whose pip does the work (default python3, 3.11+).
set -eu
export PIP_ROOT_USER_ACTION=ignore
root=$(cd "$(dirname "$0")/.." && pwd)
extras=${PUSHPOOL_EXTRAS:-aws}
python=$(command -v "${PYTHON:-python3}")
case $python in /*) ;; *) python=$PWD/$python ;; esac

zip=""
lock=""
constraints=$root/infra/lambda/constraints.txt
if [ "${1:-}" = "--zip" ]; then zip=$2; shift 2; set -- "$(mktemp -d)"; fi
if [ "${1:-}" = "--lock" ]; then
  lock=$constraints; constraints=/dev/null; extras=aws,gcp,azure,modal; shift; set -- "$(mktemp -d)"
fi
out=${1:?usage: build_lambda.sh OUT_DIR | --zip OUT.zip}
case ",$extras," in *,aws,*) ;; *) echo "PUSHPOOL_EXTRAS must include aws (got '$extras')" >&2; exit 2 ;; esac

wheels=$(mktemp -d)
source=$(mktemp -d)
trap 'rm -rf "$wheels" "$source"' EXIT
# The project itself as a wheel (pure Python), built from a copy of its sources: setuptools writes egg-info and
# build/ beside the sources, and `sam build --parallel` builds three functions at once. Then everything for
# the Lambda platform from wheels only. Powertools' Tracer needs aws-xray-sdk under Lambda (Tracing: Active),
# hence its [tracer] extra here. (PYTHONWARNINGS: setuptools' deprecation notices about pyproject.toml.)
(cd "$root" && tar -cf - --exclude=__pycache__ pyproject.toml README.md dispatcher handlers) | (cd "$source" && tar -xf -)
PYTHONWARNINGS=ignore "$python" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" "$source"
mkdir -p "$out"
"$python" -m pip install --quiet --upgrade --no-compile --no-warn-conflicts --target "$out" \
  --platform manylinux2014_x86_64 --implementation cp --python-version 3.12 --only-binary=:all: \
  --constraint "$constraints" "$(ls "$wheels"/pushpool-*.whl)[$extras]" "aws-lambda-powertools[tracer]"
# dispatcher/pool_types.py looks for templates/ beside the package in a source layout.
rm -rf "$out/templates" && cp -R "$root/templates" "$out/templates"
rm -rf "$out/bin"

if [ -n "$lock" ]; then
  "$python" - "$out" "$lock" <<'PY'
import pathlib, sys
from email.parser import HeaderParser

pins = []
for meta in pathlib.Path(sys.argv[1]).glob("*.dist-info/METADATA"):
    headers = HeaderParser().parsestr(meta.read_text(errors="replace"))
    if headers["Name"].lower() != "pushpool":
        pins.append(f"{headers['Name']}=={headers['Version']}")
header = pathlib.Path(sys.argv[2]).read_text().split("\n\n", 1)[0]
pathlib.Path(sys.argv[2]).write_text(header + "\n\n" + "\n".join(sorted(pins, key=str.lower)) + "\n")
print(f"pinned {len(pins)} packages in {sys.argv[2]}")
PY
  rm -rf "$out"
  exit 0
fi

if [ -n "$zip" ]; then
  mkdir -p "$(dirname "$zip")"
  rm -f "$zip"
  zipdir=$(cd "$(dirname "$zip")" && pwd)
  (cd "$out" && "$python" -c 'import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for d, dirs, files in os.walk("."):
        dirs.sort()
        for f in sorted(files):
            z.write(os.path.join(d, f), os.path.relpath(os.path.join(d, f), "."))' "$zipdir/$(basename "$zip")")
  rm -rf "$out"
  echo "built $zip (extras: $extras)"
else
  echo "built $out (extras: $extras)"
fi
