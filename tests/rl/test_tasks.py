"""Task checkers accept every correct answer and reject near misses."""

from __future__ import annotations

import pytest

from tokensieve import UserError
from tokensieve.rl.tasks import (
    TASKS,
    Problem,
    Task,
    extract_answer,
    get_task,
    last_expression,
    last_number,
    register_task,
)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_reference_solutions_score_one_in_every_accepted_format(name):
    task = get_task(name)
    for index in range(200):
        problem = task.problem("train", index)
        for completion in (
            f"Answer: {problem.solution}",
            f"Let me think.\n3 + 4 is not it.\nAnswer: {problem.solution}\n",
            f"answer:   {problem.solution}.",
            f"Answer: 0\nActually:\nAnswer: {problem.solution}",
        ):
            assert task.reward(completion, problem) == 1.0, (completion, problem)


@pytest.mark.parametrize("name", ["arithmetic", "compare"])
def test_numeric_near_misses_are_rejected(name):
    task = get_task(name)
    for index in range(200):
        problem = task.problem("test", index)
        value = int(problem.solution)
        for wrong in (value + 1, value - 1, -value if value else 1):
            assert task.reward(f"Answer: {wrong}", problem) == 0.0
            # without an Answer line the last number counts, not an earlier right one
            assert task.reward(f"{value} or maybe {wrong}", problem) == 0.0
        assert task.reward(f"so it is {value}.", problem) == 1.0
        # a later Answer line wins over the fallback and over earlier lines
        assert task.reward(f"Answer: {value + 1}\nbut {value}", problem) == 0.0
        assert task.reward(f"Answer: {problem.solution}\nAnswer: {value + 1}", problem) == 0.0


def test_compare_rejects_the_smaller_number():
    task = get_task("compare")
    for index in range(200):
        problem = task.problem("train", index)
        smaller = min(problem.data["numbers"])
        assert task.reward(f"Answer: {smaller}", problem) == 0.0
        assert str(max(problem.data["numbers"])) == problem.solution


def test_arithmetic_problems_are_one_or_two_steps_and_solutions_are_right():
    task = get_task("arithmetic")
    steps = set()
    for index in range(300):
        problem = task.problem("train", index)
        expression = problem.data["expression"]
        assert eval(expression) == int(problem.solution)  # noqa: S307 (our own digits)
        assert f"Compute {expression}." in problem.prompt
        steps.add(expression.count("+") + expression.count("-"))
    assert steps == {1, 2}


def test_countdown_rejects_reused_numbers_wrong_values_and_code():
    task = get_task("countdown")
    for index in range(200):
        problem = task.problem("train", index)
        a, b = problem.data["numbers"]
        target = problem.data["target"]
        assert task.reward(f"Answer: {problem.solution} = {target}", problem) == 1.0
        # no Answer line: the last expression counts
        assert task.reward(f"I try 1 + 1. Then {problem.solution} = {target}.", problem) == 1.0
        assert task.reward(f"{problem.solution} = {target}, or {a} - {b}", problem) == (
            1.0 if a - b == target else 0.0
        )
        # the right value, but `a` used two more times than it was given
        assert task.reward(f"Answer: ({problem.solution}) + {a} - {a}", problem) == 0.0
        for wrong, value in ((f"{a} + {b}", a + b), (f"{a} * {b}", a * b), (f"{a} - {b}", a - b)):
            if value != target:
                assert task.reward(f"Answer: {wrong}", problem) == 0.0
    problem = task.problem("train", 0)
    for bad in ("__import__('os')", "2 ** 10", "abc", "1 +", "1 / 0"):
        assert task.reward(f"Answer: {bad}", problem) == 0.0


def test_splits_are_deterministic_and_disjoint():
    task = get_task("arithmetic")
    assert task.problem("train", 5) == task.problem("train", 5)
    for name in TASKS:
        task = get_task(name)
        train = {task.problem("train", i).prompt for i in range(300)}
        test = {task.problem("test", i).prompt for i in range(300)}
        assert not train & test and len(test) > 20
    assert task.problem("train", 1) != task.problem("test", 1)


def test_register_and_unknown_task():
    task = Task(
        "echo",
        lambda rng: Problem("Say 7. Answer: <n>", "7", {}),
        lambda answer, problem: answer.strip() == "7",
    )
    register_task(task)
    try:
        assert get_task("echo").reward("Answer: 7", task.problem("train", 0)) == 1.0
    finally:
        TASKS.remove("echo")
    with pytest.raises(UserError, match="unknown task"):
        get_task("nope")
    with pytest.raises(UserError, match="split"):
        get_task("arithmetic").problem("dev", 0)


def test_extract_answer_takes_the_last_line():
    assert extract_answer("Answer: 1\nAnswer: 2") == "2"
    assert extract_answer("no answer here") is None
    assert last_number("3 apples and -4 pears") == "-4"
    assert last_number("none") is None
    assert last_expression("first 2 + 3, then (4 * 5) = 20") == "(4 * 5)"
    assert last_expression("just 7 here") is None
