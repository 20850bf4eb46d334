#!/bin/sh
# Build pushpool's Lambda package into a directory: the project and its dependencies for Lambda's Python
# 3.12 on x86_64 (manylinux wheels only, whatever this machine is), plus the default base job templates.
#
#   infra/build_lambda.sh OUT_DIR             # used by `sam build` (infra/lambda/Makefile)
#   infra/build_lambda.sh --zip OUT.zip       # used before `serverless deploy` (package.artifact)
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
if [ "${1:-}" = "--zip" ]; then zip=$2; shift 2; set -- "$(mktemp -d)"; fi
out=${1:?usage: build_lambda.sh OUT_DIR | --zip OUT.zip}
case ",$extras," in *,aws,*) ;; *) echo "PUSHPOOL_EXTRAS must include aws (got '$extras')" >&2; exit 2 ;; esac

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
# The project itself as a wheel (pure Python), then everything for the Lambda platform from wheels only.
# Powertools' Tracer needs aws-xray-sdk under Lambda (Tracing: Active), hence its [tracer] extra here.
# (PYTHONWARNINGS: setuptools' deprecation notices about pyproject.toml, printed once per build step.)
PYTHONWARNINGS=ignore "$python" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" "$root"
mkdir -p "$out"
"$python" -m pip install --quiet --upgrade --no-compile --no-warn-conflicts --target "$out" \
  --platform manylinux2014_x86_64 --implementation cp --python-version 3.12 --only-binary=:all: \
  "$(ls "$wheels"/pushpool-*.whl)[$extras]" "aws-lambda-powertools[tracer]"
# dispatcher/pool_types.py looks for templates/ beside the package in a source layout.
rm -rf "$out/templates" && cp -R "$root/templates" "$out/templates"
rm -rf "$out/bin"

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
