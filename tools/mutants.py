"""Mutation audit: does a test file notice when the code it tests is changed?

Each *mutant* is a copy of one module with one small edit made to its source text: an
arithmetic operator swapped (``+`` and ``-``, ``*`` and ``/``, ``**`` to ``*``), a comparison
loosened or negated (``<`` and ``<=``, ``==`` and ``!=``), ``and`` and ``or`` swapped, a unary
minus or ``not`` dropped, ``min`` and ``max`` swapped, an integer constant moved by one or a
float constant doubled. The given tests run on every mutant; a mutant on which they all still
pass has *survived*: either the edit does not change what the code computes (an equivalent
mutant, e.g. a doubled tolerance), or no test checks what it changed. The survivors are the
list to read.

Only lines that the tests execute are mutated (read from a coverage.py JSON report when one is
given with ``--coverage``); conditions that only guard a ``raise`` and the lines of ``raise``
statements are skipped unless ``--validation`` is given, since the error tests are a separate
concern. The mutants run in ``--workers`` copies of the source tree under ``--scratch``, each
with its own ``PYTHONPATH``; the repository itself is never edited.

    python -m coverage run --source=shallow -m pytest tests/test_sphere.py
    python -m coverage json -o cov.json
    python tools/mutants.py shallow/sphere.py tests/test_sphere.py --coverage cov.json --workers 2

This is a development tool (it needs coverage.py only for ``--coverage``), not part of the
package or of the test suite.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BINOPS = {ast.Add: "-", ast.Sub: "+", ast.Mult: "/", ast.Div: "*", ast.Pow: "*", ast.FloorDiv: "/"}
BINOP_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.FloorDiv: "//"}
COMPARE = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
           ast.Eq: ("==", "!="), ast.NotEq: ("!=", "==")}
SWAPPED_NAMES = {"min": "max", "max": "min", "minimum": "maximum", "maximum": "minimum", "amin": "amax",
                 "amax": "amin", "floor": "ceil", "ceil": "floor"}


@dataclass(frozen=True)
class Mutant:
    start: int  # byte offsets into the source
    stop: int
    old: str
    new: str
    line: int
    function: str

    def describe(self) -> str:
        return f"line {self.line} ({self.function}): {self.old!r} -> {self.new!r}"


def _offsets(source: bytes) -> list[int]:
    starts, pos = [0], 0
    for line in source.splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


def _operator_span(source: bytes, lines, left, right, token: str):
    """Byte span of ``token`` between the end of node ``left`` and the start of node ``right``."""
    a = lines[left.end_lineno - 1] + left.end_col_offset
    b = lines[right.lineno - 1] + right.col_offset
    gap = source[a:b]
    i = gap.find(token.encode())
    if i < 0:
        return None
    # '*' must not match the first half of '**', nor '/' the first half of '//'
    if token in ("*", "/") and gap[i:i + 2] == (token * 2).encode():
        return None
    return a + i, a + i + len(token)


def _guards_raise(node: ast.If) -> bool:
    return len(node.body) == 1 and isinstance(node.body[0], ast.Raise)


def find_mutants(path: Path, covered: set[int] | None, validation: bool) -> list[Mutant]:
    source = path.read_bytes()
    tree = ast.parse(source)
    lines = _offsets(source)
    skip: set[int] = set()  # ids of nodes whose subtrees are not mutated
    for node in ast.walk(tree):
        if not validation and isinstance(node, ast.Raise):
            skip.update(id(n) for n in ast.walk(node))
        if not validation and isinstance(node, ast.If) and _guards_raise(node):
            skip.update(id(n) for n in ast.walk(node.test))
        if isinstance(node, (ast.JoinedStr, ast.arguments)) or (
                isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "warn"):
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            skip.update(id(n) for n in ast.walk(node.returns))
        if isinstance(node, ast.AnnAssign):
            skip.update(id(n) for n in ast.walk(node.annotation))

    mutants: list[Mutant] = []

    def add(start, stop, new, node, function):
        old = source[start:stop].decode()
        if covered is not None and node.lineno not in covered:
            return
        mutants.append(Mutant(start, stop, old, new, node.lineno, function))

    def span(node):
        return lines[node.lineno - 1] + node.col_offset, lines[node.end_lineno - 1] + node.end_col_offset

    def visit(node, function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            function = node.name if function == "<module>" else f"{function}.{node.name}"
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring
            for child in body:
                visit(child, function)
            for deco in getattr(node, "decorator_list", []):
                visit(deco, function)
            return
        if id(node) not in skip and function != "<module>":
            if isinstance(node, ast.BinOp) and type(node.op) in BINOPS:
                s = _operator_span(source, lines, node.left, node.right, BINOP_TEXT[type(node.op)])
                if s:
                    add(*s, BINOPS[type(node.op)], node, function)
            elif isinstance(node, ast.Compare):
                left = node.left
                for op, right in zip(node.ops, node.comparators):
                    if type(op) in COMPARE:
                        old, new = COMPARE[type(op)]
                        s = _operator_span(source, lines, left, right, old)
                        if s:
                            add(*s, new, node, function)
                    left = right
            elif isinstance(node, ast.BoolOp) and len(node.values) == 2:
                old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
                s = _operator_span(source, lines, node.values[0], node.values[1], old)
                if s:
                    add(*s, new, node, function)
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
                a, _ = span(node)
                b, _ = span(node.operand)
                add(a, b, "", node, function)
            elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
                a, b = span(node)
                if type(node.value) is int:
                    add(a, b, str(node.value + 1), node, function)
                elif node.value != 0:
                    add(a, b, repr(2 * node.value), node, function)
                else:
                    add(a, b, "1.0", node, function)
            elif isinstance(node, ast.Name) and node.id in SWAPPED_NAMES:
                add(*span(node), SWAPPED_NAMES[node.id], node, function)
            elif isinstance(node, ast.Attribute) and node.attr in SWAPPED_NAMES:
                _, b = span(node)
                add(b - len(node.attr), b, SWAPPED_NAMES[node.attr], node, function)
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "<module>")
    return mutants


def covered_lines(report: Path, module: Path) -> set[int]:
    files = json.loads(report.read_text())["files"]
    for name, entry in files.items():
        if Path(name).resolve() == module.resolve() or str(module).endswith(name) or name.endswith(str(module)):
            return set(entry["executed_lines"])
    raise SystemExit(f"--coverage: {module} is not in {report}")


def make_worker(scratch: Path, k: int) -> Path:
    dest = scratch / f"w{k}"
    if dest.exists():
        shutil.rmtree(dest)
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache", "figures", "results",
                                    ".whl", "*.egg-info", ".hypothesis")
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def run_tests(worker: Path, tests: list[str], timeout: float, extra: list[str]):
    env = dict(os.environ, PYTHONPATH=str(worker), PYTHONDONTWRITEBYTECODE="1", OPENBLAS_NUM_THREADS="1",
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *extra, *tests]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=worker, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, ""
    status = {0: "survived", 5: "no tests"}.get(proc.returncode, "killed")
    return status, time.perf_counter() - t0, proc.stdout[-2000:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", type=Path, help="the module to mutate, e.g. shallow/sphere.py")
    parser.add_argument("tests", nargs="+", help="test files (or node ids) that should notice")
    parser.add_argument("--coverage", type=Path, help="coverage.py JSON report: mutate executed lines only")
    parser.add_argument("--validation", action="store_true", help="also mutate raise statements and their guards")
    parser.add_argument("--functions", help="comma-separated function names (qualified as Class.method) to mutate")
    parser.add_argument("--max", type=int, help="at most this many mutants, drawn at random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/shallow-mutants"))
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments, e.g. \"-k 'not slow'\"")
    parser.add_argument("--out", type=Path, help="JSON lines file of every mutant's outcome")
    args = parser.parse_args(argv)

    module = args.module.resolve()
    rel = module.relative_to(ROOT)
    covered = covered_lines(args.coverage, module) if args.coverage else None
    mutants = find_mutants(module, covered, args.validation)
    if args.functions:
        wanted = set(args.functions.split(","))
        mutants = [m for m in mutants if m.function in wanted or m.function.split(".")[-1] in wanted]
    if args.max and len(mutants) > args.max:
        mutants = sorted(random.Random(args.seed).sample(mutants, args.max), key=lambda m: m.start)
    extra = shlex.split(args.pytest_args)
    print(f"{rel}: {len(mutants)} mutants; tests {' '.join(args.tests)}", flush=True)

    workers = [make_worker(args.scratch, k) for k in range(max(1, args.workers))]
    status, base_time, tail = run_tests(workers[0], args.tests, 3600, extra)
    if status != "survived":
        raise SystemExit(f"the tests do not pass on the unmutated code ({status}):\n{tail}")
    timeout = 3 * base_time + 20
    print(f"unmutated: pass in {base_time:.1f} s; timeout per mutant {timeout:.0f} s", flush=True)
    original = module.read_bytes()

    def one(k_mutant):
        k, mutant = k_mutant
        worker = workers[k % len(workers)]
        target = worker / rel
        target.write_bytes(original[:mutant.start] + mutant.new.encode() + original[mutant.stop:])
        try:
            return mutant, run_tests(worker, args.tests, timeout, extra)
        finally:
            target.write_bytes(original)

    results = []
    out = args.out.open("w") if args.out else None
    lock = threading.Lock()

    def lane(items):
        for item in items:
            mutant, (state, seconds, _) = one(item)
            with lock:
                results.append((mutant, state))
                print(f"  [{len(results)}/{len(mutants)}] {state:8s} {seconds:5.1f} s  {mutant.describe()}", flush=True)
                if out:
                    out.write(json.dumps({"module": str(rel), "line": mutant.line, "function": mutant.function,
                                          "old": mutant.old, "new": mutant.new, "status": state,
                                          "seconds": round(seconds, 1)}) + "\n")
                    out.flush()

    # worker w only ever runs mutants w, w + W, ...: one mutant at a time per tree
    W = len(workers)
    with ThreadPoolExecutor(W) as pool:
        for fut in [pool.submit(lane, [(k, m) for k, m in enumerate(mutants) if k % W == w]) for w in range(W)]:
            fut.result()
    if out:
        out.close()
    survivors = sorted((m for m, s in results if s == "survived"), key=lambda m: m.start)
    counts = {s: sum(1 for _, t in results if t == s) for s in ("killed", "timeout", "survived", "no tests")}
    print(f"{rel}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for m in survivors:
        print("  survived: " + m.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
