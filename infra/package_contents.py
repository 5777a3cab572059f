"""What ships: the project files `chalice package` puts in every function's zip must not pull in dev tooling.

    python -m infra.package_contents build/deployment.zip

Chalice ships app.py and the whole chalicelib/ package (plus the requirements). The local stack, the moto
patches, the operator CLI and the benches live in devtools/, which must never be imported from there: a stray
import would either fail in Lambda (moto is not installed) or ship test machinery to production.
"""

from __future__ import annotations

import ast
import sys
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

FORBIDDEN = ("moto", "devtools", "tests", "pytest")
ROOT = Path(__file__).resolve().parents[1]


def project_files(names: Iterable[str]) -> list[str]:
    """The names that are the project's own code in a deployment package (app.py and chalicelib/**.py)."""
    return sorted(n for n in names if n == "app.py" or (n.startswith("chalicelib/") and n.endswith(".py")))


def imported_modules(source: str) -> Iterator[str]:
    """Every module a Python source imports (absolute imports; relative ones stay inside the package)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def forbidden_imports(files: dict[str, str]) -> list[str]:
    """`path: module` for each import of dev tooling in the given project files."""
    found = []
    for path, source in sorted(files.items()):
        for module in imported_modules(source):
            if module.split(".")[0] in FORBIDDEN:
                found.append(f"{path}: imports {module}")
    return found


def check_zip(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        names = project_files(archive.namelist())
        if "app.py" not in names:
            return [f"{path}: no app.py in the package"]
        return forbidden_imports({name: archive.read(name).decode() for name in names})


def check_tree(root: Path = ROOT) -> list[str]:
    """The same check on the working tree (what the next `make package` would ship)."""
    names = ["app.py"] + [str(p.relative_to(root)) for p in (root / "chalicelib").rglob("*.py")]
    return forbidden_imports({name: (root / name).read_text() for name in project_files(names)})


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    problems = check_zip(Path(args[0])) if args else check_tree()
    for line in problems:
        print(f"package contents: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
