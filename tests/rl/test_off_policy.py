"""Several updates per rollout, through `rl train`'s own configuration: KL-Cov's penalty
and PPO's clipping act once the old policy differs from the current one."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

BASE = ["--task", "parity", "--steps", "2", "--save-every", "2", "--group-size", "2",
        "--prompts-per-step", "2", "--rollout-prompts", "2", "--max-new-tokens", "6",
        "--learning-rate", "0.05", "--top-p", "1.0", "--quiet"]  # fmt: skip


@pytest.fixture(autouse=True)
def parity_task():
    """A task a random tiny model solves half the time (an answer of even length), so
    groups get non-zero advantages and every update moves the model."""
    from tokensieve.rl.tasks import TASKS, Problem, Task, register_task

    def problem(rng):
        return Problem(f"Say {rng.randint(0, 9)}.", "", {})

    register_task(Task("parity", problem, lambda answer, _: len(answer) % 2 == 0, str))
    yield
    TASKS.remove("parity")


def train(cli, tiny_dir, out, *extra):
    code, _, err = cli("rl", "train", "--model", tiny_dir, "--out", out, *BASE, *extra)
    assert code == 0, err
    return load_file(str(out / "final" / "model.safetensors"))


def same(a, b) -> bool:
    return all((a[k] == b[k]).all() for k in a)


def test_kl_cov_penalty_changes_the_update_once_off_policy(cli, tiny_dir, tmp_path):
    # `all` with the clip out of reach is KL-Cov's unclipped -A·r without the penalty, so
    # a difference below is the penalty's alone
    two = ["--num-iterations", "2"]
    unclipped = ["--mask", "all", "--epsilon", "1", "--epsilon-high", "100", *two]
    plain = train(cli, tiny_dir, tmp_path / "all-1", *unclipped)
    again = train(cli, tiny_dir, tmp_path / "all-2", *unclipped)
    assert same(plain, again)  # runs are reproducible, so a difference below is the mask's
    kl_cov = train(cli, tiny_dir, tmp_path / "kl", "--mask", "kl-cov", "--cov-ratio", "0.5", *two)
    assert not same(plain, kl_cov)
    rows = [
        json.loads(line) for line in (tmp_path / "kl" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any(r.get("tokensieve/penalised_fraction", 0) > 0 for r in rows)


def test_ppo_clipping_changes_the_update_when_the_ratio_leaves_its_range(cli, tiny_dir, tmp_path):
    two = ["--num-iterations", "2", "--mask", "all"]
    clipped = train(cli, tiny_dir, tmp_path / "clip", *two, "--epsilon-high", "0.0")
    loose = train(cli, tiny_dir, tmp_path / "loose", *two, "--epsilon-high", "100")
    rows = [
        json.loads(line) for line in (tmp_path / "clip" / "metrics.jsonl").read_text().splitlines()
    ]
    clip_keys = [k for r in rows for k in r if k.startswith("clip_ratio")]
    assert clip_keys, "TRL logged no clipping metric"
    assert any(r.get(k, 0) > 0 for r in rows for k in clip_keys)  # the ratio left the range
    assert not same(clipped, loose)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num-iterations", "0"], "--num-iterations must be at least 1"),
        (["--rollout-prompts", "3"], "must be a multiple of --prompts-per-step"),
        (["--rollout-prompts", "0"], "must be a multiple of --prompts-per-step"),
        (["--epsilon", "1.5"], "--epsilon must be in [0, 1]"),
        (["--mask", "kl-cov"], "strictly on-policy"),
        (["--rollout-prompts", "4", "--save-every", "1"], "on rollout boundaries"),
        (["--seed", "-1"], "--seed must be 0 to 2**32 - 1"),
        (["--seed", str(2**32)], "--seed must be 0 to 2**32 - 1"),
        (["--plain-trl", "--normalize", "selected"], "--normalize selected needs"),
    ],
)
def test_off_policy_options_are_checked(cli, tiny_dir, tmp_path, extra, message):
    code, _, err = cli("rl", "train", "--model", tiny_dir, "--out", tmp_path / "r", *BASE, *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_the_defaults_sample_as_the_recipe_and_update_off_policy():
    """By default a rollout is 2 mini-batches (off-policy from the second: clipping and
    KL-Cov act; the 80/20 recipe makes 16), rollouts sample the full distribution (the
    recipe's temperature 1, top-p 1), and the loss is averaged over the selected tokens
    for the entropy and random masks, over all tokens otherwise; TRL's own trainer
    always divides by all response tokens."""
    from tokensieve.rl.config import RunConfig

    config = RunConfig(task="arithmetic")
    assert config.steps_per_generation == 2 and not config.on_policy
    assert config.top_p == 1.0 and config.temperature == 1.0
    RunConfig(task="arithmetic", mask="kl-cov").validate()  # off-policy: allowed
    expected = {"top-entropy": "selected", "bottom-entropy": "selected", "random": "selected",
                "all": "all", "clip-cov": "all", "kl-cov": "all"}  # fmt: skip
    for mask, normalization in expected.items():
        assert RunConfig(task="arithmetic", mask=mask).loss_normalization == normalization
    assert RunConfig(task="arithmetic", normalize="all").loss_normalization == "all"
    trl_flag = RunConfig(task="arithmetic", mask="top-entropy", implementation="trl")
    assert trl_flag.loss_normalization == "all"


def test_the_clip_cov_recipes_loose_clip_reaches_trl(tmp_path):
    """The reference's Clip-Cov recipes set clip_ratio_low = clip_ratio_high = 1; the
    options reach TRL's config (the lower one as TRL's `epsilon`)."""
    from tokensieve.rl.config import RunConfig
    from tokensieve.rl.run import _grpo_args

    config = RunConfig(task="arithmetic", mask="clip-cov", epsilon=1.0, epsilon_high=1.0)
    config.validate()
    args = _grpo_args(config, tmp_path, progress=False)
    assert (args.epsilon, args.epsilon_high) == (1.0, 1.0)
    assert _grpo_args(RunConfig(task="arithmetic"), tmp_path, progress=False).epsilon == 0.2
