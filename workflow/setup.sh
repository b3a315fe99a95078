#!/usr/bin/env bash
# Install everything the pipeline needs on a fresh machine (Python 3.11; PyPI and Debian reachable).
set -euo pipefail
cd "$(dirname "$0")/.."

# Fashion-MNIST from Debian, so the default runs offline (skipped where there is no root or apt).
if [[ ! -d /usr/share/datasets/fashion-mnist ]]; then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
      || echo "setup: warning: could not install dataset-fashion-mnist; the data stage will try to download it" >&2
  else
    echo "setup: note: dataset-fashion-mnist not installed (needs root); the data stage will try to download it" >&2
  fi
fi

# uv installs the locked environment (torch + the matching torchvision) into .venv; it ignores pip's local wheels.
command -v uv >/dev/null || python3 -m pip install --quiet uv
# A relocatable environment: its scripts start the interpreter beside them and the project's own src/ is found
# relative to site-packages, so a copied or moved project folder runs its own code, not the original folder's.
if ! grep -qs "^relocatable = true" .venv/pyvenv.cfg; then
  rm -rf .venv && uv venv --relocatable --quiet .venv  # its packages come from uv's cache again (a minute or two)
fi
# pre-compiled bytecode: with PYTHONDONTWRITEBYTECODE set, every stage would otherwise re-compile torch (~7 s)
uv sync --frozen --compile-bytecode --quiet
for pth in .venv/lib/python3*/site-packages/_editable_impl_natinv*.pth; do
  echo "../../../../src" > "$pth"  # Python joins a relative .pth line to the site-packages folder
done
# DVC's plots page with Vega inline (.dvc/config names it), so `dvc plots show` renders without a network
.venv/bin/python -m natinv.dvc_plots workflow/dvc/offline.html >/dev/null
.venv/bin/python -c "import torch, torchvision, natinv; print(f'setup: torch {torch.__version__}, torchvision {torchvision.__version__}, natinv {natinv.__version__}')"
