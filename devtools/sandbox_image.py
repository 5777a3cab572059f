"""The sandbox image's code, as the emulators install it: what infra/sandbox/Dockerfile copies, and nothing else.

The Lambda sandbox function and the Fargate task run one image (infra/sandbox/Dockerfile): our
`chalicelib.sandbox` package with the one module it needs from the domain (its error base class), and pydantic.
The emulators copy exactly that into a fresh directory owned by root and read-only to everyone else, like
Lambda's /var/task and the task's read-only root: so a module the sandbox imports that the image lacks (boto3,
say) fails in the tests as it would in AWS, and the job cannot write into the code it runs under.
tests/sandbox/test_emulators.py checks that the Dockerfile's COPY lines name the same paths.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Paths of the repository the image copies to its /app (the Dockerfile's COPY lines).
IMAGE_PATHS = (
    "chalicelib/__init__.py",
    "chalicelib/domain/__init__.py",
    "chalicelib/domain/errors.py",
    "chalicelib/sandbox",
)
# The packages the image installs with pip (`pydantic` and what it depends on).
IMAGE_PACKAGES = ("pydantic", "pydantic_core", "typing_extensions", "annotated_types", "typing_inspection")
EMULATOR_FILES = {"lambda_ric.py": "_emulator/ric.py"}  # stand-ins for what the image gets from pip (awslambdaric)


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(source, target)


def _package_source(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{name} is not installed: the sandbox image needs it")
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


def build_code_dir(target: Path) -> Path:
    """Install the image's code into `target` (created; root-owned, world-readable, writable by nobody else)."""
    target.mkdir(parents=True, exist_ok=False)
    for relative in IMAGE_PATHS:
        _copy(ROOT / relative, target / relative)
    for package in IMAGE_PACKAGES:
        source = _package_source(package)
        _copy(source, target / source.name)
    here = Path(__file__).resolve().parent
    for name, relative in EMULATOR_FILES.items():
        _copy(here / name, target / relative)
    for dirpath, _dirnames, filenames in os.walk(target):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return target
