"""Task checkers accept every correct answer and reject near misses."""

from __future__ import annotations

import pytest

from tokensieve import UserError
from tokensieve.rl.tasks import TASKS, Problem, Task, extract_answer, get_task, register_task


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


@pytest.mark.parametrize("name", ["arithmetic", "letters"])
def test_numeric_near_misses_are_rejected(name):
    task = get_task(name)
    for index in range(200):
        problem = task.problem("test", index)
        value = int(problem.solution)
        for wrong in (value + 1, value - 1, -value if value else 1):
            assert task.reward(f"Answer: {wrong}", problem) == 0.0
        assert task.reward(problem.solution, problem) == 0.0  # no Answer line
        assert task.reward(f"Answer: {problem.solution}\nAnswer: {value + 1}", problem) == 0.0


def test_countdown_rejects_reused_numbers_wrong_values_and_code():
    task = get_task("countdown")
    for index in range(200):
        problem = task.problem("train", index)
        a, b, c = problem.data["numbers"]
        target = problem.data["target"]
        assert task.reward(f"Answer: {problem.solution} = {target}", problem) == 1.0
        # the right value, but `a` used two more times than it was given
        assert task.reward(f"Answer: ({problem.solution}) + {a} - {a}", problem) == 0.0
        wrongs = (
            (f"{a} + {b} + {c}", a + b + c),
            (f"{a} * {b} * {c}", a * b * c),
            (f"{a} - {b} - {c}", a - b - c),
        )
        for wrong, value in wrongs:
            if value != target:
                assert task.reward(f"Answer: {wrong}", problem) == 0.0
    problem = task.problem("train", 0)
    for bad in ("__import__('os')", "2 ** 10", "abc", "1 +", "1 / 0"):
        assert task.reward(f"Answer: {bad}", problem) == 0.0


def test_splits_are_deterministic_and_disjoint():
    task = get_task("arithmetic")
    assert task.problem("train", 5) == task.problem("train", 5)
    train = {task.problem("train", i).prompt for i in range(100)}
    test = {task.problem("test", i).prompt for i in range(100)}
    assert len(train & test) < 10  # independent streams; a few collisions by chance only
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
        del TASKS["echo"]
    with pytest.raises(UserError, match="unknown task"):
        get_task("nope")
    with pytest.raises(UserError, match="split"):
        get_task("arithmetic").problem("dev", 0)


def test_extract_answer_takes_the_last_line():
    assert extract_answer("Answer: 1\nAnswer: 2") == "2"
    assert extract_answer("no answer here") is None
