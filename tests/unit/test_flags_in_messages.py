"""Every ``--flag`` the package names in its messages is a flag of the script that prints it.

The flags are collected from the string literals (messages, help texts; docstrings are documentation
and left out) of every Python file under ``wsol_lightning/`` and ``scripts/``: plain strings, the
constant parts of f-strings (a
flag followed by a ``{...}`` field, ``--model.{name}``, is a template and left out), and the calls
``_check_range("lr", ...)`` (``--model.lr``) and ``_flag("x")`` / ``_check_int("x", ...)``
(``--data.x``) that build them; the methods' hyperparameters become ``--model.<name>`` through the
registry. A file's messages can be printed by every script that imports it (followed through the
package's imports); each of those scripts' parsers must know the flag: fit.py's LightningCLI parser,
evaluate.py's, tune.py's own parser together with fit.py's (tune.py hands the other flags to it), and
predict.py's together with fit.py's (it rebuilds a fit.py run from its checkpoint).
Shell scripts are left out (``start_postgres.sh --stop`` is their own argument).
"""

import argparse
import ast
import re
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("fit", "tune", "evaluate", "predict")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w.-]*")
FIELD = "\x00"  # stands for an f-string's {...} field


class _Captured(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


def _script_parser(name: str):
    """The parser the script builds, caught when it starts parsing (``main([])``, nothing else runs)."""
    import jsonargparse
    from lightning.pytorch.cli import LightningCLI

    def capture(parser, *args, **kwargs):
        raise _Captured(parser)

    tree = ast.parse((ROOT / "scripts" / f"{name}.py").read_text())  # the module whose main the script runs
    source = next(node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                  and any(alias.name == "main" for alias in node.names))
    module = __import__(source, fromlist=["main"])
    main = getattr(module.main, "__wrapped__", module.main)
    with mock.patch.object(argparse.ArgumentParser, "parse_known_args", capture), \
            mock.patch.object(jsonargparse.ArgumentParser, "parse_args", capture), \
            mock.patch.object(LightningCLI, "parse_arguments", lambda self, parser, args: capture(parser)):
        with pytest.raises(_Captured) as info:
            main([])
    return info.value.parser


@pytest.fixture(scope="module")
def known_flags() -> Dict[str, Set[str]]:
    """The flags each script accepts (tune.py: its own and fit.py's)."""
    flags = {name: set(_script_parser(name)._option_string_actions) for name in SCRIPTS}
    flags["tune"] |= flags["fit"]
    # predict.py rebuilds the model and data of a fit.py run from its checkpoint: a message about a
    # --model.* / fit.py flag there names the setting of the fit.py run that made the checkpoint.
    # It also prints the evaluate.py command that re-scores the maps it exports.
    flags["predict"] |= flags["fit"] | flags["evaluate"]
    return flags


def _python_files() -> Iterator[Path]:
    yield from sorted((ROOT / "wsol_lightning").rglob("*.py"))
    yield from sorted((ROOT / "scripts").glob("*.py"))


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def _imports(tree: ast.AST, module: str) -> Set[str]:
    """The package modules a file imports, anywhere in it (function-level imports included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                base = ".".join(module.split(".")[:-node.level] + [node.module])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("wsol_lightning")}


def _flags_in(tree: ast.AST) -> Iterator[Tuple[int, str]]:
    """``(line, flag)`` of every flag the file's string literals name (see the module docstring)."""
    def texts(node) -> Iterator[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
        elif isinstance(node, ast.JoinedStr):
            yield "".join(part.value if isinstance(part, ast.Constant) else FIELD for part in node.values)

    skipped = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    skipped |= {id(node.body[0].value) for node in ast.walk(tree)  # docstrings document, they are not printed
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
                and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        for text in texts(node):
            for match in FLAG.finditer(text):
                if text[match.end():match.end() + 1] != FIELD:
                    yield node.lineno, match.group().rstrip(".-")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            given = {keyword.arg for keyword in node.keywords}
            if node.func.id == "_check_range" and "flag" not in given:
                yield node.lineno, f"--model.{node.args[0].value}"
            elif node.func.id in ("_flag", "_check_int"):
                yield node.lineno, f"--data.{node.args[0].value}"


def _named_flags() -> Tuple[Dict[str, list], Dict[str, Set[str]]]:
    """``{module: [(line, flag), ...]}`` and ``{module: the modules it imports}``."""
    flags, imports = {}, {}
    for path in _python_files():
        module = "scripts." + path.stem if path.parent.name == "scripts" else _module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        flags[module] = list(_flags_in(tree))
        imports[module] = _imports(tree, module)
    return flags, imports


def _reached_by(script: str, imports: Dict[str, Set[str]]) -> Set[str]:
    seen, todo = set(), [f"scripts.{script}"]
    while todo:
        module = todo.pop()
        if module in seen or module not in imports:
            continue
        seen.add(module)
        todo.extend(imports[module])
    return seen


def test_the_collector_finds_flags_of_every_kind():
    """The collector itself: plain strings, f-strings with fields, and the calls that build flags."""
    tree = ast.parse('"""Docstring: --not-a-message."""\nx = f"--model.{name} {1}: --data.data_root=1 then '
                     '--trainer.max_epochs."\n_check_range("lr", 1, 0, 1)\n'
                     '_check_range("n", 1, 0, 1, flag="--data (n)")\n_check_int("batch_size", 1, 1)\n'
                     'parser.add_argument("--x", help="see --seed_everything")\n')
    assert sorted(flag for _, flag in _flags_in(tree)) == ["--data", "--data.batch_size", "--data.data_root",
                                                           "--model.lr", "--seed_everything",
                                                           "--trainer.max_epochs", "--x"]


def test_every_flag_named_in_a_message_is_known_to_the_scripts_that_print_it(known_flags):
    from wsol_lightning.models.methods.registry import all_hyperparameters

    flags, imports = _named_flags()
    assert sum(len(found) for found in flags.values()) > 50  # the collector sees the package's messages
    flags["wsol_lightning.models.methods.registry"] += [(0, f"--model.{name}") for name in all_hyperparameters()]
    printers = {script: _reached_by(script, imports) for script in SCRIPTS}
    unknown = []
    for module, found in flags.items():
        scripts = [script for script in SCRIPTS if module in printers[script]]
        assert scripts or not found, f"{module} names flags but no script imports it"
        for line, flag in found:
            for script in scripts:
                if flag not in known_flags[script]:
                    unknown.append(f"{module.replace('.', '/')}.py:{line}: {flag} (printed by {script}.py)")
    assert not unknown, "flags no parser knows:\n" + "\n".join(sorted(set(unknown)))
