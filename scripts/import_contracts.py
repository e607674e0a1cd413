"""An import-linter contract for the imports its graph cannot see: modules imported *by name*.

`importlib.import_module("worker.embedded")` (or `__import__`) is a real dependency, but import-linter
builds its graph from import statements only, so the `forbidden` contracts let `safetune -> worker`
through that way (issue 12). This contract reads every module of its source packages and breaks
when one names a forbidden module in such a call.

Registered in pyproject.toml under `contract_types` as `forbidden_by_name`.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck

IMPORT_BY_NAME = {"import_module", "__import__"}


def imports_by_name(source: str) -> list[tuple[int, str]]:
    """(line, module) for each `import_module("m")` / `__import__("m")` call with a literal name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        first = node.args[0]
        if name in IMPORT_BY_NAME and isinstance(first, ast.Constant) and isinstance(first.value, str):
            found.append((node.lineno, first.value))
    return sorted(found)


def names_forbidden(module: str, forbidden: list[str]) -> str | None:
    """The forbidden package that `module` is or lies inside, if any."""
    return next((f for f in forbidden if module == f or module.startswith(f + ".")), None)


def module_file(module: str, root: Path) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


class ForbiddenByNameContract(Contract):
    """Source modules may not import the forbidden modules by name either."""

    source_modules = fields.ListField(subfield=fields.StringField())
    forbidden_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        violations: list[str] = []
        root = Path.cwd()
        for package in self.source_modules:  # type: ignore[attr-defined]
            for module in sorted({package, *graph.find_descendants(package)}):
                path = module_file(module, root)
                if path is None:
                    continue
                for line, named in imports_by_name(path.read_text(encoding="utf-8")):
                    hit = names_forbidden(named, list(self.forbidden_modules))  # type: ignore[attr-defined]
                    if hit:
                        violations.append(
                            f"{module} imports {named!r} by name (line {line}): {hit} is forbidden"
                        )
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for violation in check.metadata["violations"]:
            output.print_error(violation)
            output.new_line()
