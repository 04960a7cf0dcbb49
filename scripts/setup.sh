#!/usr/bin/env bash
# Set up a machine for GarmentCV: Debian's Fashion-MNIST files, Debian's chromium (the report pages' browser
# tests), Debian's wrk (the serve benchmark's load generator) and a pinned virtual environment in .venv.
# Idempotent: re-running it only installs what is missing. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  echo "==> installing Debian's dataset-fashion-mnist (the real data of the main job and tests)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
if ! dpkg -s chromium >/dev/null 2>&1; then
  echo "==> installing Debian's chromium (tests/test_report_browser.py opens the report pages in it, headless)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if ! command -v wrk >/dev/null 2>&1; then
  echo "==> installing Debian's wrk (the HTTP load generator of python -m benchmarks serve and its test)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
echo "==> installing garmentcv[cpu,train,eval,dev] with the pins of constraints.txt"
.venv/bin/python -m pip install -q -c constraints.txt -e '.[cpu,train,eval,dev]'
echo "==> installing the Ray engine, object storage and parquet (garmentcv[ray,s3,parquet]) and the S3 test server"
.venv/bin/python -m pip install -q -c constraints.txt -e '.[ray,s3,parquet,cluster-test]'
echo "==> installing garmentcv[openvino] (the second CPU runtime: --runtime openvino, gcv export's bf16 check)"
.venv/bin/python -m pip install -q -c constraints.txt -e '.[openvino]'
echo "==> installing garmentcv[serve,ray-serve] (gcv serve and its review app: FastAPI, uvicorn, prometheus-client, python-multipart; Ray Serve)"
.venv/bin/python -m pip install -q -c constraints.txt -e '.[serve,ray-serve]'
echo "==> installing garmentcv[curate] (gcv data audit and label-next: scikit-learn and cleanlab)"
.venv/bin/python -m pip install -q -c constraints.txt -e '.[curate]'
echo "==> installing garmentcv[docs] (MkDocs: the documentation site, built by the tests with --strict)"
.venv/bin/python -m pip install -q -c constraints.txt -e '.[docs]'
.venv/bin/python -c "import garmentcv, torch, torchvision, onnxruntime, openvino; print('garmentcv', garmentcv.__version__, '| torch', torch.__version__, '| torchvision', torchvision.__version__, '| onnxruntime', onnxruntime.__version__, '| openvino', openvino.__version__)"
