#!/usr/bin/env bash
# Create .venv-monai14: the inference stack of a MONAI Label 0.8.5 server (MONAI 1.4.0) with lesionlab on top.
#
# Used by tests/apps/test_monailabel_contract.py to run the MONAI Label inference emulation (bundle_conventions.md
# §11.4) of every bundle under MONAI 1.4.0. MONAI 1.4.0 requires numpy<2 and pins pytorch-ignite==0.4.11 in its
# "ignite" extra (the extra MONAI Label 0.8.5 installs); torch is the same CPU build as the main venv.
# lesionlab goes in with --no-deps, as it would on top of an existing MONAI Label environment; afterwards a pip
# dry run of the full install (with dependencies) is recorded to show that it would not change monai or torch.
#
# Usage: tools/make_monai14_env.sh [VENV_DIR]   (default .venv-monai14; PYTHON and TORCH_SPEC may be set)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-monai14}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PY="$VENV/bin/python"
start=$(date +%s)
# the marker file written last is the completion flag (`make monai14-env` depends on it): a half-built
# environment from an interrupted run is rebuilt from scratch
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet "$TORCH_SPEC"
# scipy and tqdm: a MONAI Label 0.8.5 environment has both (monailabel requires scipy and monai[tqdm]), and
# lesionlab.data, imported through the bundles' SaveImaged writer, imports them
"$PY" -m pip install --quiet "monai==1.4.0" "numpy>=1.24,<2.0" "pytorch-ignite==0.4.11" nibabel scipy tqdm SimpleITK
"$PY" -m pip install --quiet --no-deps -e .
# what a plain `pip install .` (with dependencies) would add or change in this environment
"$PY" -m pip install --quiet --dry-run --report "$VENV/lesionlab-install-report.json" -e . >/dev/null 2>&1 || true
"$PY" - <<'PY' > "$VENV/versions.txt"
import monai, numpy, torch, ignite, nibabel, scipy
print(f"monai {monai.__version__}\ntorch {torch.__version__}\nnumpy {numpy.__version__}\n"
      f"pytorch-ignite {ignite.__version__}\nnibabel {nibabel.__version__}\nscipy {scipy.__version__}")
PY
echo "seconds $(( $(date +%s) - start ))" >> "$VENV/versions.txt"
touch "$VENV/.monai14-ready"
cat "$VENV/versions.txt"
