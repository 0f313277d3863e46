"""Import rules that import-linter (the .importlinter contracts, run in CI) cannot state:
fed_train.py is a module, not a package, so nothing in the packages may import it."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_package_imports_the_entry_script():
    offenders = []
    for package in ("privacy", "federated", "datasets", "nets", "utils"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "fed_train"]
    assert offenders == []


def test_no_training_script_imports_the_attacks():
    """import-linter checks the packages; the top-level scripts are checked here: only the
    attacks themselves (and the tests) import attacks/."""
    offenders = []
    for path in [*ROOT.glob("*.py"), *(ROOT / "scripts").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "attacks"]
    assert offenders == []
