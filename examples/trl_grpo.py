"""Train a model with GRPO against a Rooms server, using TRL.

The model is given one tool, `echo(message)`, which steps a Rooms session; the
reward is the environment's: len(message) x 0.1, so training teaches longer echoes.

Two ways to wire Rooms into TRL's `GRPOTrainer`:

- `--variant environment_factory` (default): TRL runs the tool-calling loop and
  calls `EchoRoom.reset`, `EchoRoom.echo` and `EchoRoom.get_reward` itself.
- `--variant rollout_func`: the script generates, parses the tool call, steps
  Rooms and hands TRL the tokens and the environment's rewards.

TRL never closes its environment instances. Every session here is opened through
`RoomsSessions`, a context manager around training that closes them all when
training ends, however it ends.

`--smoke` trains a tiny model made locally (examples/trl_smoke.py, beside this file) on a CPU
instead of `--model`; nothing else in the run changes:

    uv run --group trl python examples/trl_grpo.py --smoke --base-url http://localhost:8000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from typing_extensions import Self

from rooms import RoomsAction, RoomsEnv

PROMPT = "Call the echo tool with a message of your choice."


# --- sessions and the environment TRL drives ---------------------------------------------


@dataclass
class EnvironmentRecord:
    """What the environment saw and returned, for the run's JSON log."""

    calls: Counter[str] = field(default_factory=Counter)
    echoes: list[dict[str, Any]] = field(default_factory=list)
    rewards: list[dict[str, Any]] = field(default_factory=list)


class RoomsSessions:
    """Opens Rooms sessions for a training run and closes every one of them at the end.

    TRL creates environment instances as it needs them and never closes them, so the
    sessions are owned here instead: use it as a context manager around training.

        with RoomsSessions("http://localhost:8000") as sessions:
            trainer = GRPOTrainer(..., environment_factory=sessions.environment)
            trainer.train()
        # every session the trainer opened is closed here, even if training raised
    """

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.record = EnvironmentRecord()
        self.opened = 0
        self._clients: list[Any] = []
        self._closed = False

    def open(self) -> Any:
        """A new connected session on the server, closed with the others."""
        if self._closed:
            raise RuntimeError("these Rooms sessions are closed: train inside `with RoomsSessions(...)`")
        client = RoomsEnv(base_url=self.base_url).sync()
        self._clients.append(client)
        self.opened += 1
        return client

    def environment(self) -> EchoRoom:
        """TRL's `environment_factory`: a zero-argument callable returning one environment."""
        return EchoRoom(self)

    def close(self) -> None:
        """Close every session opened so far (each one, even if closing another raised)."""
        self._closed = True
        clients, self._clients = self._clients, []
        with ExitStack() as closing:
            for client in clients:
                closing.callback(client.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EchoRoom:
    """One rollout's environment: a Rooms session, opened on first reset and reused after.

    TRL offers every public method except `reset` and `get_reward` to the model as a
    tool, with its docstring: `echo` is the only one.
    """

    def __init__(self, sessions: RoomsSessions):
        self._sessions = sessions
        self._client: Any = None
        self._reward = 0.0
        self._message: str | None = None

    def reset(self, **row: Any) -> str | None:
        """Start a new episode (TRL passes the dataset row)."""
        if self._client is None:
            self._client = self._sessions.open()
        self._client.reset()
        self._reward = 0.0
        self._message = None
        self._sessions.record.calls["reset"] += 1
        return None

    def echo(self, message: str) -> str:
        """Send a message to the echo room, which says it back.

        Args:
            message: The message to send.

        Returns:
            The message as the room echoed it.
        """
        result = self._client.step(RoomsAction(message=message))
        self._reward = float(result.reward)
        self._message = message
        self._sessions.record.calls["echo"] += 1
        self._sessions.record.echoes.append({"message": message, "reward": self._reward})
        echoed: str = result.observation.echoed_message
        return echoed

    def get_reward(self) -> float:
        """The environment's reward for the episode: that of its last echo (0 if it never called the tool)."""
        self._sessions.record.calls["get_reward"] += 1
        self._sessions.record.rewards.append({"message": self._message, "reward": self._reward})
        return self._reward


# --- the rollout_func variant -------------------------------------------------------------

TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def echo_message(completion: str) -> str | None:
    """The `message` argument of the first `echo` tool call in a completion, if any."""
    match = TOOL_CALL.search(completion)
    if match is None:
        return None
    try:
        call = json.loads(match[1])
    except json.JSONDecodeError:
        return None
    arguments = call.get("arguments") if isinstance(call, dict) else None
    if call.get("name") != "echo" or not isinstance(arguments, dict) or not isinstance(arguments.get("message"), str):
        return None
    message: str = arguments["message"]
    return message


class EchoRollout:
    """TRL's `rollout_func`: generate, step Rooms with each echo, return tokens and the environment's rewards."""

    def __init__(self, sessions: RoomsSessions, max_new_tokens: int, temperature: float):
        self.sessions = sessions
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.rooms: list[EchoRoom] = []

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        import torch

        tokenizer = trainer.processing_class
        model = trainer.accelerator.unwrap_model(trainer.model)
        while len(self.rooms) < len(prompts):
            self.rooms.append(self.sessions.environment())
        tools = [self.rooms[0].echo]
        prompt_ids = [
            tokenizer.apply_chat_template(
                prompt, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            for prompt in prompts
        ]
        batch = tokenizer.pad({"input_ids": prompt_ids}, padding_side="left", return_tensors="pt").to(model.device)
        training = model.training
        model.eval()  # generation with gradient checkpointing on would run without its KV cache
        with torch.no_grad():
            output = model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                do_sample=True,
                temperature=self.temperature,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                return_dict_in_generate=True,
                output_scores=True,
            )
        model.train(training)
        logprobs = model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
        new_tokens = output.sequences[:, batch["input_ids"].shape[1] :]
        completion_ids, completion_logprobs, rewards = [], [], []
        for room, tokens, token_logprobs in zip(self.rooms, new_tokens.tolist(), logprobs.tolist(), strict=True):
            length = tokens.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in tokens else len(tokens)
            completion_ids.append(tokens[:length])
            completion_logprobs.append(token_logprobs[:length])
            room.reset()
            message = echo_message(tokenizer.decode(tokens[:length]))
            if message is not None:
                room.echo(message)
            rewards.append(room.get_reward())
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion_ids,
            "logprobs": completion_logprobs,
            "env_reward": rewards,
        }


def environment_reward(completions: list[Any], env_reward: list[float | None], **kwargs: Any) -> list[float | None]:
    """The reward the rollout got from Rooms (forwarded from `EchoRollout`)."""
    return env_reward


# --- the run ------------------------------------------------------------------------------


@dataclass
class StepLog:
    step: int
    logged_reward: float
    environment_rewards: list[dict[str, Any]]


def reward_logger(sessions: RoomsSessions, reward_key: str, steps: list[StepLog]) -> Any:
    """A callback pairing each step's logged reward with the rewards the environment returned during it."""
    from transformers import TrainerCallback

    class RewardLogger(TrainerCallback):
        seen = 0

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any
        ) -> None:
            if logs is None or reward_key not in logs:
                return
            returned = sessions.record.rewards[self.seen :]
            self.seen = len(sessions.record.rewards)
            steps.append(StepLog(state.global_step, logs[reward_key], returned))
            rewards = [r["reward"] for r in returned]
            print(f"step {state.global_step}: reward {logs[reward_key]:.3f} (environment: {rewards})", flush=True)

    return RewardLogger()


def positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    server = parser.add_mutually_exclusive_group()
    server.add_argument("--base-url", default="http://localhost:8000", help="a running Rooms server")
    server.add_argument("--docker-image", help="start this Rooms image (e.g. rooms-env:latest) for the run")
    parser.add_argument("--model", default="Qwen/Qwen3-0.6B", help="a chat model with tool calling (needs a GPU)")
    parser.add_argument("--smoke", action="store_true", help="a tiny model made locally, 2 steps on CPU")
    parser.add_argument("--variant", choices=["environment_factory", "rollout_func"], default="environment_factory")
    parser.add_argument(
        "--steps", type=positive_int, default=None, help="training steps (default: 200, or 2 with --smoke)"
    )
    parser.add_argument(
        "--generations", type=positive_int, default=None, help="completions per prompt (default 8, smoke 2)"
    )
    parser.add_argument(
        "--prompts-per-step", type=positive_int, default=2, help="prompts per step (rollouts = this x generations)"
    )
    parser.add_argument("--max-completion-length", type=positive_int, default=None, help="tokens per completion")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--warmup-steps", type=positive_int, default=100, help="--smoke: supervised warm-up steps")
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="save the trained model here (default: not saved)"
    )
    parser.add_argument("--log-json", type=Path, help="write per-step rewards and what the environment returned")
    parser.add_argument("--plot", type=Path, help="save a plot of reward per step (needs matplotlib)")
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.smoke else 200)
    args.generations = args.generations or (2 if args.smoke else 8)
    args.max_completion_length = args.max_completion_length or (48 if args.smoke else 256)
    args.learning_rate = args.learning_rate or (1e-3 if args.smoke else 1e-6)
    return args


def require_gpu(model: str) -> None:
    import torch

    if not torch.cuda.is_available():
        sys.exit(f"training {model} needs a CUDA GPU and none is available here; --smoke runs a tiny model on CPU")


@contextmanager
def rooms_server(args: argparse.Namespace) -> Iterator[str]:
    """The base URL of the server to train against: the one given, or a container started for the run."""
    if args.docker_image is None:
        yield args.base_url
        return
    from openenv.core.containers.runtime import LocalDockerProvider

    provider = LocalDockerProvider()  # type: ignore[no-untyped-call]
    base_url = provider.start_container(args.docker_image)
    try:
        provider.wait_for_ready(base_url, timeout_s=120)
        yield base_url
    finally:
        provider.stop_container()


def check_server(base_url: str) -> None:
    """Fail early, and clearly, if no Rooms server answers at `base_url`."""
    client = RoomsEnv(base_url=base_url).sync()
    try:
        client.reset()
    except (ConnectionError, OSError, RuntimeError) as error:
        sys.exit(f"no Rooms server answers at {base_url} ({error}); start one with `uv run server`")
    finally:
        client.close()


def train(args: argparse.Namespace, base_url: str, steps: list[StepLog]) -> RoomsSessions:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # environment_factory and rollout_func are experimental
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer  # type: ignore[attr-defined]

    rollouts = args.prompts_per_step * args.generations
    with RoomsSessions(base_url) as sessions, tempfile.TemporaryDirectory() as scratch:
        tool = sessions.environment().echo  # opens no session: only its schema is read
        if args.smoke:
            from trl_smoke import smoke_model_and_tokenizer  # examples/trl_smoke.py: made here, nothing downloaded

            model, tokenizer = smoke_model_and_tokenizer(PROMPT, tool, args.warmup_steps)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(args.model)
            model = AutoModelForCausalLM.from_pretrained(args.model, dtype="bfloat16")
        config = GRPOConfig(
            output_dir=str(args.output_dir or scratch),
            max_steps=args.steps,
            per_device_train_batch_size=rollouts,
            num_generations=args.generations,
            max_completion_length=args.max_completion_length,
            max_tool_calling_iterations=1,
            learning_rate=args.learning_rate,
            temperature=1.0,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=args.smoke,
            bf16=not args.smoke,
            chat_template_kwargs={} if args.smoke else {"enable_thinking": False},  # Qwen3: answer without thinking
            seed=0,
        )
        dataset = Dataset.from_list(
            [{"prompt": [{"role": "user", "content": PROMPT}]}] * max(rollouts * args.steps, 16)
        )
        if args.variant == "environment_factory":
            trainer = GRPOTrainer(
                model=model,
                args=config,
                train_dataset=dataset,
                processing_class=tokenizer,
                environment_factory=sessions.environment,
            )
            reward_key = f"rewards/{EchoRoom.__name__}/mean"
        else:
            trainer = GRPOTrainer(
                model=model,
                args=config,
                train_dataset=dataset,
                processing_class=tokenizer,
                reward_funcs=environment_reward,
                rollout_func=EchoRollout(sessions, args.max_completion_length, temperature=1.0),
            )
            reward_key = f"rewards/{environment_reward.__name__}/mean"
        trainer.add_callback(reward_logger(sessions, reward_key, steps))
        trainer.train()
        if args.output_dir is not None:
            trainer.save_model(str(args.output_dir))
        print(f"sessions opened: {sessions.opened} (closed now)", flush=True)
    return sessions


def write_log(path: Path, args: argparse.Namespace, sessions: RoomsSessions, steps: list[StepLog]) -> None:
    log = {
        "variant": args.variant,
        "sessions_opened": sessions.opened,
        "calls": dict(sessions.record.calls),
        "echoes": sessions.record.echoes,
        "steps": [asdict(step) for step in steps],
    }
    path.write_text(json.dumps(log, indent=2))


def plot(path: Path, steps: list[StepLog], title: str, window: int = 5) -> None:
    """Reward per step, and its mean over the last `window` steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = [s.step for s in steps]
    rewards = [s.logged_reward for s in steps]
    smoothed = [
        sum(rewards[max(0, i - window + 1) : i + 1]) / len(rewards[max(0, i - window + 1) : i + 1])
        for i in range(len(rewards))
    ]
    figure, axes = plt.subplots(figsize=(6, 3.2))
    axes.plot(numbers, rewards, marker="o", markersize=3, alpha=0.4, label="mean reward of the step")
    axes.plot(numbers, smoothed, linewidth=2, label=f"mean of the last {window} steps")
    axes.set_xlabel("training step")
    axes.set_ylabel("reward (len(message) x 0.1)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with rooms_server(args) as base_url:
        check_server(base_url)
        if not args.smoke:
            require_gpu(args.model)
        steps: list[StepLog] = []
        sessions = train(args, base_url, steps)
    if args.log_json:
        write_log(args.log_json, args, sessions, steps)
    if args.plot:
        plot(args.plot, steps, f"GRPO against Rooms ({'tiny smoke model, CPU' if args.smoke else args.model})")


if __name__ == "__main__":
    main()
