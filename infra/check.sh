#!/usr/bin/env bash
# Offline checks of the two deploy files (`make deploy-check`; .ci/run calls it after `make test`):
#
#   1. cfn-lint on infra/template.yaml (SAM, transformed by cfn-lint itself)
#   2. sam validate --lint (aws-sam-cli in a venv of its own: it pins old boto3/click), then sam build, with
#      each function's unzipped size (and that of a package with every extra) checked against Lambda's 250 MB
#   3. the Lambda package (infra/build_lambda.sh), imported under Python 3.12 when this machine has one
#   4. serverless@3 package (npx, pinned) -> .serverless/ (every part on) and .build/serverless-quickstart/ (the ECS
#      quickstart alone), then cfn-lint on each generated CloudFormation template
#   5. checkov on infra/template.yaml as it is and with every part on, and on the generated CloudFormation; every
#      skip is written next to its resource (Metadata.checkov.skip) with its reason, so any new finding fails
#
# Nothing here talks to AWS: the AWS credentials are dummies. The tools live in .tools/<tool>/ (one venv each,
# made once, re-made only when missing or when its pinned version below changes); serverless comes from
# npm through npx's cache. Only PyPI and the npm registry are reached, and only on a first run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

CFN_LINT_VERSION=1.58.0
SAM_CLI_VERSION=1.170.0
CHECKOV_VERSION=3.3.30
SERVERLESS_VERSION=3.40.0
PYTHON=${PYTHON:-python3}
TOOLS=$root/.tools
ARTIFACT=.build/pushpool-lambda.zip

# No call may reach AWS or a vendor's telemetry.
export AWS_ACCESS_KEY_ID=offline-check AWS_SECRET_ACCESS_KEY=offline-check AWS_SESSION_TOKEN=offline-check
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export SAM_CLI_TELEMETRY=0 SLS_TELEMETRY_DISABLED=1 SLS_NOTIFICATIONS_MODE=off SLS_DEPRECATION_DISABLE='*'
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

step() { printf '\n== %s  [%d s]\n' "$*" "$((SECONDS - started))"; }
started=$SECONDS

# --- tools ------------------------------------------------------------------------------------------------
tool_venv() {  # NAME PACKAGE==VERSION: a venv of its own under .tools/, made only when missing or outdated
  local name=$1 spec=$2 dir=$TOOLS/$1 stamp=$TOOLS/$1/.installed-${2//[^A-Za-z0-9._-]/_}
  [ -f "$stamp" ] && return 0
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --upgrade pip >"$TOOLS/$name.log" 2>&1
  if ! "$dir/bin/python" -m pip install --quiet "$spec" >>"$TOOLS/$name.log" 2>&1; then
    echo "installing $spec into $dir failed; see $TOOLS/$name.log" >&2
    tail -n 20 "$TOOLS/$name.log" >&2
    return 1
  fi
  touch "$stamp"
}

step "tools (cached in .tools/)"
mkdir -p "$TOOLS"
pids=()
tool_venv cfn-lint "cfn-lint==$CFN_LINT_VERSION" & pids+=($!)
tool_venv sam "aws-sam-cli==$SAM_CLI_VERSION" & pids+=($!)
tool_venv checkov "checkov==$CHECKOV_VERSION" & pids+=($!)
# Warm npx's cache for serverless at the same time.
(npx --yes "serverless@$SERVERLESS_VERSION" --version >"$TOOLS/serverless.log" 2>&1 \
  || { echo "npx serverless@$SERVERLESS_VERSION failed; see $TOOLS/serverless.log" >&2; exit 1; }) & pids+=($!)
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" = 0 ] || exit 1
echo "cfn-lint $CFN_LINT_VERSION, aws-sam-cli $SAM_CLI_VERSION, checkov $CHECKOV_VERSION, serverless $SERVERLESS_VERSION ($((SECONDS - started)) s)"

CFN_LINT=$TOOLS/cfn-lint/bin/cfn-lint
SAM=$TOOLS/sam/bin/sam
CHECKOV=$TOOLS/checkov/bin/checkov

# --- SAM ----------------------------------------------------------------------------------------------------
step "cfn-lint infra/template.yaml"
"$CFN_LINT" infra/template.yaml
echo ok

step "sam validate --lint"
"$SAM" validate --lint --region us-east-1 --template-file infra/template.yaml

step "sam build (each function's package, unzipped, against Lambda's 250 MB)"
rm -rf .aws-sam/build
"$SAM" build --template-file infra/template.yaml --build-dir .aws-sam/build --parallel \
  2> >(grep -v '^WARNING: Location' >&2) | grep -E '^(built|Build Succeeded)'
lambda_size() {  # NAME DIR: its size in MB, refused above Lambda's limit for an unzipped package
  local mb
  mb=$(du -sm "$2" | cut -f1)
  echo "$1: $mb MB unzipped (Lambda allows 250 MB)"
  [ "$mb" -lt 250 ] || { echo "$1 is over Lambda's 250 MB unzipped limit" >&2; return 1; }
}
for fn in DispatchFunction EcsEventsFunction HttpFunction; do
  lambda_size "$fn (extras: ${PUSHPOOL_EXTRAS:-aws})" ".aws-sam/build/$fn"
done
every_extra=$(mktemp -d)
PUSHPOOL_EXTRAS=aws,gcp,azure,modal sh infra/build_lambda.sh "$every_extra/pkg" 2> >(grep -v '^WARNING: Location' >&2) >/dev/null
lambda_size "the package with every extra (aws,gcp,azure,modal)" "$every_extra/pkg"
rm -rf "$every_extra"

# --- the Lambda package -----------------------------------------------------------------------------------
step "Lambda package ($ARTIFACT)"
# Rebuilt only when something that goes into it is newer than it.
if [ ! -f "$ARTIFACT" ] || [ -n "$(find pyproject.toml dispatcher handlers templates infra/build_lambda.sh \
    -newer "$ARTIFACT" -type f -print -quit)" ]; then
  build_python=$PYTHON
  [ -x .venv/bin/python ] && build_python=$root/.venv/bin/python
  PYTHON=$build_python sh infra/build_lambda.sh --zip "$ARTIFACT" 2> >(grep -v '^WARNING: Location' >&2)
else
  echo "up to date"
fi

py312=""
for candidate in python3.12 "$(command -v pyenv >/dev/null && pyenv root 2>/dev/null)/versions/3.12"*/bin/python3; do
  if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    py312=$candidate
    break
  fi
done
smoked=$ARTIFACT.imported
if [ -f "$smoked" ] && [ "$smoked" -nt "$ARTIFACT" ]; then
  echo "this package's handlers imported under Python 3.12 before"
elif [ -n "$py312" ]; then
  unpacked=$(mktemp -d)
  trap 'rm -rf "$unpacked"' EXIT
  "$PYTHON" -m zipfile -e "$ARTIFACT" "$unpacked"
  # Lambda's view: only the package on the path, each handler named as the deploy files name it.
  for handler in dispatch ecs_events http; do
    (cd "$unpacked" && env -i PATH="$PATH" PYTHONPATH="$unpacked" PYTHONNOUSERSITE=1 AWS_DEFAULT_REGION=us-east-1 \
      _HANDLER="handlers.aws_lambda.$handler" PUSHPOOL_STORE="dynamodb://pushpool?region=us-east-1" \
      "$py312" -I -c "
import sys; sys.path.insert(0, '.')
import handlers.aws_lambda as m
assert callable(m.$handler)
import aws_xray_sdk  # Tracing: Active needs it
from dispatcher.pool_types import default_template
default_template('ecs:push')
")
  done
  touch "$smoked"
  echo "the three handlers import under $("$py312" -V) from the package alone"
else
  echo "no Python 3.12 here: the package was built but not imported (tests/test_deploy_files.py imports the handlers)"
fi

# --- Serverless -------------------------------------------------------------------------------------------
sls_package() {  # DIR PARAM...: serverless package into DIR, failing on any configuration warning but one
  local dir=$1 out
  shift
  rm -rf "$dir"
  out=$(npx --yes "serverless@$SERVERLESS_VERSION" package --stage ci --region us-east-1 --package "$dir" "$@" 2>&1) \
    || { echo "$out"; return 1; }
  echo "$out"
  # v3's schema predates python3.12 (a warning only; CloudFormation takes it). Any other warning fails.
  if echo "$out" | grep -E "^ +at '" | grep -vq "at 'provider.runtime'"; then
    echo "serverless.yml has configuration warnings besides the known provider.runtime one" >&2
    return 1
  fi
  [ -f "$dir/cloudformation-template-update-stack.json" ]
}

# Serverless empties .serverless/ whenever it packages, wherever to: the quickstart alone goes first.
step "serverless@$SERVERLESS_VERSION package (the ECS quickstart alone, as docs/deploy.md deploys it)"
sls_package .build/serverless-quickstart --param="createEcsQuickstart=true"
quickstart=.build/serverless-quickstart/cloudformation-template-update-stack.json

step "serverless@$SERVERLESS_VERSION package (every part on: clusters and roles named, and the ECS quickstart)"
sls_package .serverless --param="createEcsQuickstart=true" \
  --param="clusterArns=arn:aws:ecs:us-east-1:123456789012:cluster/pushpool,arn:aws:ecs:us-east-1:123456789012:cluster/other" \
  --param="taskRoleArns=arn:aws:iam::123456789012:role/pushpool-task" \
  --param="executionRoleArns=arn:aws:iam::123456789012:role/pushpool-execution"
generated=.serverless/cloudformation-template-update-stack.json

# W3005: Serverless itself adds DependsOn entries that a Ref/GetAtt already implies.
# W8003: Serverless resolves ${param:...} before CloudFormation sees the template, so each condition over a
# param compares two constants (that is the point: it is decided at package time).
# W1033 (the quickstart alone): an empty clusterArns/taskRoleArns/executionRoleArns is split into [""] inside
# the Fn::If branch its constant-false condition (HasTaskRoleArns, ...) never takes.
for file in "$generated" "$quickstart"; do
  step "cfn-lint $file"
  ignored="W3005 W8003"
  [ "$file" = "$quickstart" ] && ignored="$ignored W1033"
  # shellcheck disable=SC2086
  "$CFN_LINT" --ignore-checks $ignored -- "$file"
  echo ok
done

# --- checkov ----------------------------------------------------------------------------------------------
# On the SAM template and on what serverless.yml really deploys (the generated template): checkov's own
# serverless runner ignores resource Metadata skips and checks the same resources again.
# checkov drops what a condition excludes under the parameters' defaults, so the SAM template is also checked with
# every part on (the quickstart, and clusters and roles named), as the first serverless package is.
sam_on=$(mktemp --suffix=.yaml)
"$PYTHON" - infra/template.yaml "$sam_on" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text, quickstart = re.subn(r'(\n  CreateEcsQuickstart:\n    Type: String\n    Default: )"false"', r'\1"true"', text)
defaults = {
    "ClusterArns": "arn:aws:ecs:us-east-1:123456789012:cluster/pushpool",
    "TaskRoleArns": "arn:aws:iam::123456789012:role/pushpool-task",
    "ExecutionRoleArns": "arn:aws:iam::123456789012:role/pushpool-execution",
}
for name, arn in defaults.items():
    text, n = re.subn(rf'(\n  {name}:\n    Type: CommaDelimitedList\n    Default: )""', rf"\g<1>{arn}", text)
    quickstart += n
assert quickstart == 4, "infra/check.sh: the parameters to turn on have moved"
open(sys.argv[2], "w").write(text)
PY
for file in infra/template.yaml "$sam_on" "$generated"; do
  step "checkov $file"
  "$CHECKOV" --file "$file" --framework cloudformation --skip-download --quiet --compact
  echo ok
done
rm -f "$sam_on"

printf '\ndeploy-check passed in %d s\n' "$((SECONDS - started))"
