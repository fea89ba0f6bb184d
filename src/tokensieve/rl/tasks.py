"""Verifiable tasks: generated problems with exact checkers, for RL with verifiable rewards.

Every problem asks for the final answer on a last line ``Answer: <answer>``; the checker
reads the last such line only, so the reasoning before it is free. Problems are
generated from (task, split, index) deterministically, and the train and test splits
never share a seed. A user registers a task with `register_task`.
"""

from __future__ import annotations

import ast
import operator
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tokensieve.errors import UserError

ANSWER = re.compile(r"Answer:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
FORMAT = "End with a last line of the form 'Answer: <your answer>'."


@dataclass(frozen=True)
class Problem:
    prompt: str
    solution: str  # a reference answer (for checking the checker and for reports)
    data: dict


@dataclass(frozen=True)
class Task:
    name: str
    generate: Callable[[random.Random], Problem]
    check: Callable[[str, Problem], bool]  # the extracted answer, the problem

    def problem(self, split: str, index: int) -> Problem:
        if split not in ("train", "test"):
            raise UserError(f"split must be 'train' or 'test', got {split!r}")
        return self.generate(random.Random(f"{self.name}/{split}/{index}"))

    def reward(self, completion: str, problem: Problem) -> float:
        """1.0 when the last 'Answer:' line is correct, else 0.0."""
        answer = extract_answer(completion)
        return float(answer is not None and self.check(answer, problem))


def extract_answer(completion: str) -> str | None:
    found = ANSWER.findall(completion)
    return found[-1] if found else None


def _number(text: str) -> int | None:
    cleaned = text.strip().rstrip(".").replace(",", "")
    return int(cleaned) if re.fullmatch(r"[-+]?\d+", cleaned) else None


def _arithmetic(rng: random.Random) -> Problem:
    a, b, c = rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 9)
    op1, op2 = rng.choice("+-"), rng.choice("+-*")
    expression = f"({a} {op1} {b}) {op2} {c}"
    value = _evaluate(ast.parse(expression, mode="eval").body)
    prompt = f"Compute {expression}. Think step by step. {FORMAT}"
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
    numbers = [rng.randint(1, 12) for _ in range(3)]
    a, b, c = numbers
    expression = rng.choice([f"{a} + {b} + {c}", f"{a} * {b} - {c}", f"({a} + {b}) * {c}"])
    target = _evaluate(ast.parse(expression, mode="eval").body)
    prompt = (
        f"Using the numbers {numbers}, each at most once, and + - * / and parentheses, "
        f"write an expression equal to {target}. {FORMAT}"
    )
    return Problem(prompt, expression, {"numbers": numbers, "target": target})


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


def _letters(rng: random.Random) -> Problem:
    word = "".join(rng.choice("abcdeilmnorst") for _ in range(rng.randint(6, 10)))
    letter = rng.choice(word)
    count = word.count(letter)
    prompt = f"How many times does the letter '{letter}' occur in '{word}'? {FORMAT}"
    return Problem(prompt, str(count), {"word": word, "letter": letter, "count": count})


def _check_letters(answer: str, problem: Problem) -> bool:
    return _number(answer) == problem.data["count"]


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make `task` available by name (CLI ``--task``)."""
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name]


register_task(Task("arithmetic", _arithmetic, _check_arithmetic))
register_task(Task("countdown", _countdown, _check_countdown))
register_task(Task("letters", _letters, _check_letters))
