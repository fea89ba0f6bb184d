"""Verifiable tasks: generated problems with exact checkers, for RL with verifiable rewards.

Every prompt shows one worked example (question, solution, ``Answer: <answer>``) and then
the question: a 135M model follows a shown format far more often than a described one.
The answer is read from the last ``Answer:`` line; when a completion has none, from the
task's fallback (the last number, or the last arithmetic expression), so a right answer
stated in a sentence still counts, and a later ``Answer:`` line always wins. Problems are
generated from (task, split, index) deterministically, and the train and test splits are
disjoint. Difficulty was tuned (at top-p 0.9) so the embedded model starts between 20%
and 70%; at `rl eval`'s defaults (temperature 1, top-p 1.0) it starts at 14-27% (README).
A user registers a task with
`register_task`.
"""

from __future__ import annotations

import ast
import hashlib
import operator
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tokensieve.errors import UserError
from tokensieve.registry import Registry

ANSWER = re.compile(r"Answer:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
NUMBER = re.compile(r"[-+]?\d+")
EXPRESSION = re.compile(r"[(\d][\d\s()+\-*/]*\d\s*\)*")


@dataclass(frozen=True)
class Problem:
    prompt: str
    solution: str  # a reference answer (for checking the checker and for reports)
    data: dict


def last_number(text: str) -> str | None:
    found = NUMBER.findall(text)
    return found[-1] if found else None


def last_expression(text: str) -> str | None:
    found = [e.strip() for e in EXPRESSION.findall(text) if re.search(r"\d\s*[-+*/]", e)]
    return found[-1] if found else None


@dataclass(frozen=True)
class Task:
    name: str
    generate: Callable[[random.Random], Problem]
    check: Callable[[str, Problem], bool]  # the extracted answer, the problem
    fallback: Callable[[str], str | None] | None = field(default=None)

    def problem(self, split: str, index: int) -> Problem:
        """Problem `index` of `split`. A problem's split is fixed by a hash of its prompt
        (a quarter are test), so the splits never share a problem even where the space of
        problems is small; the draws for `split` skip the other split's problems."""
        if split not in ("train", "test"):
            raise UserError(f"split must be 'train' or 'test', got {split!r}")
        rng = random.Random(f"{self.name}/{split}/{index}")
        for _ in range(1000):
            problem = self.generate(rng)
            if split_of(problem) == split:
                return problem
        raise UserError(f"task {self.name!r} generated no {split} problem in 1000 draws")

    def extract(self, completion: str) -> str | None:
        """The last 'Answer:' line, else the fallback's reading of the whole completion."""
        answer = extract_answer(completion)
        if answer is None and self.fallback is not None:
            answer = self.fallback(completion)
        return answer

    def reward(self, completion: str, problem: Problem) -> float:
        """1.0 when the extracted answer is correct, else 0.0."""
        answer = self.extract(completion)
        return float(answer is not None and self.check(answer, problem))


def split_of(problem: Problem) -> str:
    digest = hashlib.sha256(problem.prompt.encode()).digest()
    return "test" if digest[0] % 4 == 0 else "train"


def extract_answer(completion: str) -> str | None:
    found = ANSWER.findall(completion)
    return found[-1] if found else None


def _number(text: str) -> int | None:
    cleaned = text.strip().rstrip(".").replace(",", "")
    return int(cleaned) if re.fullmatch(r"[-+]?\d+", cleaned) else None


def one_shot(question: str, solution: str, answer: str, task_question: str) -> str:
    return (
        f"Example:\nQuestion: {question}\nSolution: {solution}\nAnswer: {answer}\n\n"
        f"Now solve this one in the same way.\nQuestion: {task_question}"
    )


def _arithmetic(rng: random.Random) -> Problem:
    """``a + b`` or ``a - b`` (two thirds), else ``a + b ± c``, worked in steps; the example
    has as many steps as the problem."""
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    if rng.random() < 2 / 3:
        op = "+" if rng.random() < 0.5 or a < b else "-"
        expression, example = f"{a} {op} {b}", ("Compute 4 + 3.", "4 + 3 = 7.", "7")
    else:
        c, op = rng.randint(1, 9), rng.choice("+-")
        expression = f"{a} + {b} {op} {c}"
        example = ("Compute 4 + 3 - 2.", "4 + 3 = 7. 7 - 2 = 5.", "5")
    value = _evaluate(ast.parse(expression, mode="eval").body)
    prompt = one_shot(*example, f"Compute {expression}.")
    return Problem(prompt, str(value), {"expression": expression, "value": value})


def _check_arithmetic(answer: str, problem: Problem) -> bool:
    return _number(answer) == problem.data["value"]


_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(node):
    """Integers and + - * / only: anything else raises ValueError."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError("not an arithmetic expression")


def _countdown(rng: random.Random) -> Problem:
    """Reach a target from two numbers with + or * (the smallest countdown)."""
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    expression = rng.choice([f"{a} + {b}", f"{a} * {b}"])
    target = _evaluate(ast.parse(expression, mode="eval").body)
    prompt = one_shot(
        "Use the numbers 3 and 4 with + or * to make 7.", "3 + 4 = 7.", "3 + 4",
        f"Use the numbers {a} and {b} with + or * to make {target}.",
    )  # fmt: skip
    return Problem(prompt, expression, {"numbers": [a, b], "target": target})


def _check_countdown(answer: str, problem: Problem) -> bool:
    expression = answer.strip().rstrip(".").split("=")[0]
    try:
        tree = ast.parse(expression, mode="eval").body
        value = _evaluate(tree)
    except (SyntaxError, ValueError, ZeroDivisionError):
        return False
    used = Counter(n.value for n in ast.walk(tree) if isinstance(n, ast.Constant))
    available = Counter(problem.data["numbers"])
    return not (used - available) and abs(value - problem.data["target"]) < 1e-9


def _compare(rng: random.Random) -> Problem:
    """The larger of two two-digit numbers (place value: tens first, then units)."""
    a, b = rng.sample(range(10, 100), 2)
    prompt = one_shot(
        "Which number is larger, 31 or 13?",
        "31 has 3 tens and 13 has 1 ten, so 31 is larger.", "31",
        f"Which number is larger, {a} or {b}?",
    )  # fmt: skip
    return Problem(prompt, str(max(a, b)), {"numbers": [a, b], "larger": max(a, b)})


def _check_compare(answer: str, problem: Problem) -> bool:
    return _number(answer) == problem.data["larger"]


TASKS = Registry("task", {})


def register_task(task: Task) -> Task:
    """Make `task` available by name (CLI ``--task``)."""
    TASKS.add(task.name, task)
    return task


def get_task(name: str) -> Task:
    return TASKS.load(name)


register_task(Task("arithmetic", _arithmetic, _check_arithmetic, last_number))
register_task(Task("countdown", _countdown, _check_countdown, last_expression))
register_task(Task("compare", _compare, _check_compare, last_number))
