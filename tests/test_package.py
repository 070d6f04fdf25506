import subprocess
import sys

import recvos


def test_import_is_lazy_and_public_names_exist():
    assert recvos.__version__
    assert "build_model" in recvos.__all__
    # importing recvos must not import torch (no side effects, fast CLI start)
    code = "import sys, recvos; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "recvos", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "recvos" in out.stdout
