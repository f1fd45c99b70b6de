"""Install the PyTorch build that fits this machine: CPU-only unless an NVIDIA GPU is present.

Why: ``pip install torch==X`` from PyPI on Linux x86_64 resolves to the CUDA build and pulls
~18 ``nvidia-*`` packages (several GB), also on machines without a GPU. PyTorch publishes its
CPU-only Linux wheels (``torch==X+cpu``) on its own index instead. This script (standard library
only: it runs before anything is installed) picks, in order:

1. the pinned torch already installed in the target interpreter: nothing to do;
2. a pinned torch wheel that pip finds without any index (``--no-index``: the ``find-links``
   of pip's own configuration, e.g. a machine's local wheel cache): it is installed alone, then
   its small dependencies (filelock, sympy, ...) from the configured index;
3. ``--target cpu`` on Linux: PyTorch's CPU index (:data:`CPU_INDEX`, or the env var
   ``LIVERANK_TORCH_INDEX``); on macOS / Windows PyPI's default build is already CPU-only;
4. ``--target cuda``: PyPI's default build (CUDA on Linux).

``--target auto`` (default; or the env var ``LIVERANK_TORCH``) is ``cuda`` when ``nvidia-smi -L``
lists a GPU, else ``cpu``. ``--dry-run`` resolves without installing (``pip install --dry-run
--ignore-installed --report``) and prints every package pip would install, with the number of
``nvidia-*`` ones; ``--skip-local`` ignores what this machine has (what a fresh one gets).

Examples::

    python scripts/install_torch.py --python .venv/bin/python            # what make does
    python scripts/install_torch.py --dry-run --target cpu --skip-local  # what a fresh CPU box gets
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

#: the torch version liverank is pinned to (pyproject.toml says the same)
TORCH_VERSION = "2.13.0"
#: PyTorch's index of CPU-only wheels
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TARGETS = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Plan:
    """One pip invocation (``args`` after ``pip install``) and why it was chosen."""

    target: str
    source: str  # "installed", "local", "cpu-index", "pypi"
    args: list[str] = field(default_factory=list)
    reason: str = ""


def has_nvidia_gpu() -> bool:
    """Whether ``nvidia-smi -L`` lists at least one GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def resolve_target(target: str, gpu: bool | None = None) -> str:
    """``auto`` -> ``cuda`` with an NVIDIA GPU, else ``cpu``; others unchanged."""
    if target not in TARGETS:
        raise SystemExit(f"error: unknown target '{target}'; choose one of {', '.join(TARGETS)}")
    if target != "auto":
        return target
    return "cuda" if (has_nvidia_gpu() if gpu is None else gpu) else "cpu"


def remote_plan(target: str, system: str, version: str = TORCH_VERSION) -> Plan:
    """The install from a public index for ``target`` (``cpu`` / ``cuda``) on ``system``."""
    spec = f"torch=={version}"
    if target == "cpu" and system == "Linux":
        index = os.environ.get("LIVERANK_TORCH_INDEX", CPU_INDEX)
        return Plan(
            target,
            "cpu-index",
            [spec, "--index-url", index],
            f"CPU-only build from {index} (PyPI's Linux build is the CUDA one)",
        )
    why = (
        "PyPI's default build (CUDA on Linux)"
        if target == "cuda"
        else f"PyPI's default build (CPU-only on {system})"
    )
    return Plan(target, "pypi", [spec], why)


def installed_version(python: str) -> str | None:
    """``torch.__version__`` in ``python`` without importing torch (None: not installed)."""
    code = "import importlib.metadata as m; print(m.version('torch'))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def pip(python: str, args: list[str], capture: bool = True) -> subprocess.CompletedProcess:
    """``python -m pip install ARGS`` (quiet, output captured unless ``capture`` is False)."""
    quiet = ["--quiet"] if capture else []
    return subprocess.run(
        [python, "-m", "pip", "install", *quiet, *args], capture_output=capture, text=True
    )


def local_wheel(python: str, version: str = TORCH_VERSION) -> bool:
    """Whether pip finds ``torch==version`` without any index (find-links only)."""
    args = ["--dry-run", "--ignore-installed", "--no-index", "--no-deps", f"torch=={version}"]
    return pip(python, args).returncode == 0


def dry_run(python: str, args: list[str]) -> list[str]:
    """``name==version`` of every package ``pip install ARGS`` would install (none is)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        out = pip(python, ["--dry-run", "--ignore-installed", "--report", report, *args])
        if out.returncode != 0:
            tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-3:])
            raise SystemExit(f"error: pip's dry run failed (pip install {' '.join(args)}):\n{tail}")
        with open(report, encoding="utf-8") as f:
            installs = json.load(f)["install"]
    return [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in installs]


def show(packages: list[str]) -> None:
    print("\n".join(packages))
    nvidia = [p for p in packages if p.lower().startswith("nvidia")]
    print(f"# {len(packages)} packages, {len(nvidia)} nvidia-*")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter to install into")
    ap.add_argument(
        "--target",
        default=os.environ.get("LIVERANK_TORCH", "auto"),
        help="auto (default), cpu or cuda",
    )
    ap.add_argument("--dry-run", action="store_true", help="resolve and list, install nothing")
    ap.add_argument(
        "--skip-local",
        action="store_true",
        help="ignore an installed torch, local wheels and pip's configuration (what a fresh "
        "machine gets from the public index)",
    )
    args = ap.parse_args(argv)
    target = resolve_target(args.target)

    spec = f"torch=={TORCH_VERSION}"
    if not args.skip_local:
        have = installed_version(args.python)
        if have is not None and have.split("+")[0] == TORCH_VERSION and not args.dry_run:
            print(f"torch {have} already installed ({target} target)")
            return 0
        if local_wheel(args.python):
            print(f"torch {TORCH_VERSION} for a {target} machine: a local wheel (pip's find-links)")
            if args.dry_run:
                show(dry_run(args.python, [spec]))
                return 0
            steps = [[spec, "--no-index", "--no-deps"], [spec]]  # the wheel, then its deps
            for step in steps:
                if pip(args.python, step).returncode != 0:
                    break
            else:
                print(f"torch {installed_version(args.python)} installed from a local wheel")
                return 0
            print("the local wheel did not install; using a public index", file=sys.stderr)

    plan = remote_plan(target, platform.system())
    if args.skip_local:  # pip's own configuration and PIP_* variables are this machine's too
        plan = Plan(plan.target, plan.source, ["--isolated", *plan.args], plan.reason)
    print(f"torch {TORCH_VERSION} for a {target} machine: {plan.reason}")
    print("pip install " + " ".join(plan.args))
    if args.dry_run:
        show(dry_run(args.python, plan.args))
        return 0
    out = pip(args.python, plan.args, capture=False)  # pip's own progress bars
    if out.returncode != 0:
        print(
            f"error: installing torch failed (pip install {' '.join(plan.args)})", file=sys.stderr
        )
    return out.returncode


if __name__ == "__main__":
    sys.exit(main())
