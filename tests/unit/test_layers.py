"""The layering the code relies on, checked on the source: what ships never imports dev tooling, and only the
adapters (the one place that knows AWS) import boto3 or botocore."""

from __future__ import annotations

from pathlib import Path

from infra.package_contents import ROOT, check_tree, forbidden_imports, imported_modules, project_files

SHIPPED = project_files(["app.py"] + [str(p.relative_to(ROOT)) for p in (ROOT / "chalicelib").rglob("*.py")])


def _imports(path: str) -> set[str]:
    return {
        m.split(".")[0] if m.split(".")[0] in ("boto3", "botocore") else m
        for m in imported_modules((ROOT / path).read_text())
    }


def test_packaging_takes_app_and_chalicelib_only() -> None:
    names = ["app.py", "chalicelib/config.py", "devtools/stack.py", "tests/fakes.py", "infra/checks.py", "README.md"]
    assert project_files(names) == ["app.py", "chalicelib/config.py"]
    assert "app.py" in SHIPPED and "chalicelib/services/lifecycle.py" in SHIPPED


def test_nothing_that_ships_imports_dev_tooling() -> None:
    assert check_tree() == []
    # and the check bites
    found = forbidden_imports({"chalicelib/x.py": "import moto\nfrom devtools.stack import Stack\n"})
    assert sorted(found) == ["chalicelib/x.py: imports devtools.stack", "chalicelib/x.py: imports moto"]


def test_only_adapters_import_boto3_or_botocore() -> None:
    offenders = [
        path
        for path in SHIPPED
        if not path.startswith("chalicelib/adapters/") and _imports(path) & {"boto3", "botocore"}
    ]
    assert offenders == []


def test_services_and_domain_never_import_adapters() -> None:
    for layer in ("chalicelib/services/", "chalicelib/domain/"):
        for path in (p for p in SHIPPED if p.startswith(layer)):
            assert not any(m.startswith("chalicelib.adapters") for m in _imports(path)), path
    for path in (p for p in SHIPPED if p.startswith("chalicelib/domain/")):
        assert not any(m.startswith("chalicelib.services") for m in _imports(path)), path


def test_the_sandbox_core_needs_neither_aws_nor_the_services() -> None:
    for path in (p for p in SHIPPED if p.startswith("chalicelib/sandbox/")):
        imports = _imports(path)
        assert not imports & {"boto3", "botocore"}, path
        assert not any(m.startswith(("chalicelib.services", "chalicelib.adapters")) for m in imports), path
    assert Path(ROOT / "chalicelib" / "sandbox").is_dir()
