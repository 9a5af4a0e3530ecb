"""Layering: a module imports only from its own layer or the layers below it (read from the source, so
an upward import hidden inside a function is caught too). The practitioner path (inference, viz) stands
beside training, never on it; only the CLI sees everything."""
from __future__ import annotations

import ast
from pathlib import Path

import kdcicam

SRC = Path(kdcicam.__file__).parent

#: top-level module or package -> the kdcicam parts it may import (besides itself)
ALLOWED = {
    "errors": set(),
    "data": {"errors"},
    "models": {"errors"},
    "config": {"errors", "data", "models"},  # the method list is the model registry's
    "config_template": {"errors", "data"},
    "evaluation": {"errors", "data"},
    "scoremaps": {"evaluation"},
    "localization": {"errors", "evaluation"},
    "preprocess": {"errors", "data", "localization"},
    "onnx_backend": {"errors", "localization", "preprocess", "scoremaps"},
    "coco": {"errors"},
    "posthoc": {"errors"},
    "checkpoints": {"errors", "config", "models"},
    "diagnostics": {"models"},
    "training": {"errors", "data", "models", "config", "evaluation", "scoremaps", "checkpoints", "diagnostics",
                 "posthoc"},
    "inference": {"errors", "data", "evaluation", "scoremaps", "checkpoints", "localization", "posthoc", "preprocess"},
    "export": {"errors", "checkpoints", "models", "localization", "onnx_backend", "__version__"},
    "viz": {"errors", "data", "config", "evaluation", "checkpoints", "inference", "diagnostics", "__version__"},
    "app": {"errors", "data", "evaluation", "scoremaps", "inference", "__version__"},
    "cli": {"errors", "data", "config", "config_template", "evaluation", "training", "inference", "viz", "__version__",
            "checkpoints", "coco", "export", "onnx_backend", "app", "posthoc"},
    "__init__": {"models", "inference", "evaluation", "onnx_backend"},
    "__main__": {"cli"},
}


def _imports(path: Path, src: Path = SRC) -> set[str]:
    """The kdcicam top-level parts a source file imports, relative or absolute."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    package = parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                found.add(target[0] if target else node.names[0].name)
            elif node.module and node.module.split(".")[0] == "kdcicam":
                target = node.module.split(".")[1:]
                found.add(target[0] if target else node.names[0].name)
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("kdcicam.")}
    return found


def test_every_part_has_a_layer():
    tops = {p.relative_to(SRC).with_suffix("").parts[0] for p in SRC.rglob("*.py")}
    assert tops == set(ALLOWED)


def test_no_module_imports_upward():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        top = path.relative_to(SRC).with_suffix("").parts[0]
        for target in sorted(_imports(path) - {top} - ALLOWED[top]):
            wrong.append(f"{path.relative_to(SRC)} imports kdcicam.{target}")
    assert wrong == []


def test_the_checker_sees_imports_inside_functions(tmp_path: Path):
    fake = tmp_path / "kdcicam"
    (fake / "viz").mkdir(parents=True)
    (fake / "viz" / "x.py").write_text("def f():\n    from ..training.module import load_module\n"
                                       "    from . import y\n    import kdcicam.cli\n")
    assert _imports(fake / "viz" / "x.py", src=fake) == {"training", "viz", "cli"}
