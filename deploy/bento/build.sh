#!/usr/bin/env bash
# Build the retain-scoring bento: `deploy/bento/build.sh` from anywhere in the repository.
# The model store is BENTOML_HOME (default var/bentoml, as the scoring service uses); the bento lands in the
# same home's bentos/. `bentoml containerize retain-scoring:latest` then makes an image (needs Docker).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export BENTOML_HOME="${BENTOML_HOME:-$root/var/bentoml}"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

cp deploy/bento/bentofile.yaml "$stage/"
cp -r services/scoring/src/retain_scoring "$stage/"
for package in retain-api retain-kit retain-profile; do
    uv build --quiet --wheel --package "$package" --out-dir "$stage/wheels"
done
uv export --quiet --frozen --no-dev --no-hashes --no-emit-workspace --package retain-scoring \
    --output-file "$stage/requirements.txt"

# An empty store gets the published prior, exactly as the service bootstraps at start; a churn model, when
# the store has one, is packed too (without one the service derives churn risk from BTYD alone).
uv run --frozen python deploy/bento/stage_models.py "$stage/bentofile.yaml"

# BentoML only reads files under the working directory.
cd "$stage"
uv run --frozen --project "$root" bentoml build --bentofile bentofile.yaml .
