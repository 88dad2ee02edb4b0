#!/usr/bin/env bash
# Makes (once) the Python virtual environment of the tests that compare with PyTorch and
# timm (weight import from timm state dicts, safetensors files written by PyTorch), OUTSIDE
# the repository, and prints its python. Test tools only, never a dependency of Opacity.
# Location: $OPACITY_TORCH_VENV, else $HOME/.cache/opacity-torch-venv.
#
# - torch: the CPU build when pip can find it (a local wheel directory in PIP_FIND_LINKS,
#   as on the project's machines), else the PyPI build.
# - timm 1.0.31 imports torchvision, whose PyPI wheels for Linux are CUDA builds whose
#   compiled ops cannot load next to a CPU torch (torchvision 0.28 then fails at import).
#   timm's model code needs only torchvision's Python parts, so torchvision 0.15.2 is
#   installed without dependencies: its compiled ops also fail to load, but it imports
#   without them (it predates the fake-op registrations that fail).
# - pretrainedmodels 0.7.4 (Cadene's models: NASNet-A-Mobile, which timm lacks, for the
#   detector benchmark's reference), without its dependencies (torch and torchvision are
#   already there), plus the small pure-Python ones it imports (munch, six, tqdm).
set -euo pipefail
venv="${OPACITY_TORCH_VENV:-$HOME/.cache/opacity-torch-venv}"
py="$venv/bin/python"
check='import warnings; warnings.simplefilter("ignore"); import torch, timm, safetensors, pretrainedmodels; timm.create_model("resnet34", pretrained=False)'
if ! "$py" -c "$check" >/dev/null 2>&1; then
  python3 -m venv "$venv" >&2
  pip="$py -m pip install --quiet --disable-pip-version-check"
  $pip "torch==2.13.0+cpu" >&2 2>/dev/null || $pip torch >&2
  $pip numpy pillow safetensors huggingface_hub pyyaml requests >&2
  $pip --no-deps timm==1.0.31 torchvision==0.15.2 pretrainedmodels==0.7.4 munch six tqdm >&2
  "$py" -c "$check" >&2
fi
echo "$py"
