"""scripts/install_torch.py: a CPU-only machine gets the CPU build of torch (issue #12 item 9).

The public dry runs (what `make torch-plan` prints) need the network; here the choice itself is
tested: which index for which machine, and that auto-detection follows nvidia-smi.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_torch.py"
spec = importlib.util.spec_from_file_location("install_torch", SCRIPT)
install_torch = importlib.util.module_from_spec(spec)
sys.modules["install_torch"] = install_torch  # dataclasses look their module up there
spec.loader.exec_module(install_torch)


def test_pin_matches_pyproject() -> None:
    text = (SCRIPT.parents[1] / "pyproject.toml").read_text()
    assert f'"torch=={install_torch.TORCH_VERSION}"' in text


def test_cpu_linux_uses_the_cpu_index_and_cuda_uses_pypi(monkeypatch) -> None:
    monkeypatch.delenv("LIVERANK_TORCH_INDEX", raising=False)
    cpu = install_torch.remote_plan("cpu", "Linux")
    assert cpu.source == "cpu-index"
    assert cpu.args == ["torch==2.13.0", "--index-url", install_torch.CPU_INDEX]
    cuda = install_torch.remote_plan("cuda", "Linux")
    assert cuda.source == "pypi" and cuda.args == ["torch==2.13.0"]
    # PyPI's macOS / Windows builds are CPU-only already
    assert install_torch.remote_plan("cpu", "Darwin").args == ["torch==2.13.0"]
    monkeypatch.setenv("LIVERANK_TORCH_INDEX", "https://mirror.example/cpu")
    assert install_torch.remote_plan("cpu", "Linux").args[-1] == "https://mirror.example/cpu"


def test_auto_target_follows_the_gpu(monkeypatch) -> None:
    assert install_torch.resolve_target("auto", gpu=False) == "cpu"
    assert install_torch.resolve_target("auto", gpu=True) == "cuda"
    assert install_torch.resolve_target("cpu", gpu=True) == "cpu"
    monkeypatch.setattr(install_torch.shutil, "which", lambda name: None)
    assert install_torch.has_nvidia_gpu() is False
    assert install_torch.resolve_target("auto") == "cpu"
    with pytest.raises(SystemExit, match="unknown target 'rocm'"):
        install_torch.resolve_target("rocm")


def test_fake_nvidia_smi_listing_a_gpu_means_cuda(tmp_path, monkeypatch) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}")
    assert install_torch.has_nvidia_gpu() is True
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert install_torch.has_nvidia_gpu() is False


def test_already_installed_pin_is_left_alone() -> None:
    """The test interpreter has the pinned torch: the script installs nothing."""
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--python", sys.executable, "--target", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "already installed" in out.stdout
