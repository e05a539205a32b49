#!/usr/bin/env bash
# Set up mcls on a fresh machine: a virtual environment at .venv with the pinned packages, then mcls itself.
# MCLS_VENV=/some/dir keeps the environment there (CI caches it between runs) and links .venv to it.
# It is rebuilt only when requirements.lock, pyproject.toml or this script change.
set -euo pipefail   # pipefail: pip's own exit status survives the filter below
cd "$(dirname "$0")"
py=${PYTHON:-python3}
venv=${MCLS_VENV:-.venv}
key=$(cat requirements.lock pyproject.toml setup.sh | sha1sum | cut -c1-12)
pip() { { "$venv/bin/pip" "$@" 2>&1; } | { grep -v 'is ignored: it is neither a file' || true; }; }   # quiet index noise
if [ ! -f "$venv/.mcls-$key" ]; then
  echo "setup: building $venv (torch is large: a few minutes the first time)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  pip install -q --upgrade pip
  pip install -q -r requirements.lock
  # facenet-pytorch 2.6.0 declares torch<2.3 and numpy<2 but works with these; mcls.crop checks that at import
  pip install -q --no-deps facenet-pytorch==2.6.0
  touch "$venv/.mcls-$key"
fi
if [ "$venv" != ".venv" ]; then rm -rf .venv; ln -s "$venv" .venv; fi
pip install -q --no-deps --no-build-isolation -e .
"$venv/bin/python" -c "import mcls.crop, fastai, timm, albumentations; print('setup: ok, mcls', __import__('mcls').__version__)"
