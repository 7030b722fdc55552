"""A tiny tokenizer and model, made locally, for `examples/trl_grpo.py --smoke`.

Nothing is downloaded: a byte-level BPE tokenizer is trained on the task's own conversations, and a
random 2-layer Qwen2 model is warmed up on them (supervised, a few seconds on a CPU) until it writes
`echo` tool calls, so that 2 GRPO steps have rewards to learn from.
"""

from __future__ import annotations

import random
import time
from typing import Any

WORDS = ["hi", "room", "echo", "hello", "rooms env", "say it back", "a longer message", "hello there, rooms"]


def smoke_model_and_tokenizer(prompt: str, tool: Any, warmup_steps: int) -> tuple[Any, Any]:
    """A tokenizer for `prompt` and `tool`'s conversations, and a model warmed up on them for `warmup_steps`."""
    tokenizer = smoke_tokenizer(prompt, tool)
    return smoke_model(prompt, tokenizer, tool, warmup_steps), tokenizer


def smoke_tokenizer(prompt: str, tool: Any) -> Any:
    """A byte-level BPE tokenizer trained on this task's conversations, with a chat template TRL can parse."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from trl.chat_template_utils import qwen2_5_chat_template

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    markers = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
    backend = Tokenizer(models.BPE())
    # No splitting at spaces: merges span the fixed system prompt, so prompts are a few dozen tokens long.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, special_tokens=specials + markers, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    probe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()))  # type: ignore[no-untyped-call]
    probe.chat_template = qwen2_5_chat_template
    corpus = [
        probe.apply_chat_template(conversation, tools=[tool], tokenize=False)
        for conversation in warmup_conversations(prompt, 40)
    ]
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=specials
    )
    tokenizer.chat_template = qwen2_5_chat_template
    return tokenizer


def warmup_conversations(prompt: str, count: int, seed: int = 0) -> list[list[dict[str, Any]]]:
    """Conversations in which the assistant calls `echo` with messages of varied length."""
    rng = random.Random(seed)
    conversations: list[list[dict[str, Any]]] = []
    for _ in range(count):
        message = rng.choice(WORDS)
        call = {"type": "function", "function": {"name": "echo", "arguments": {"message": message}}}
        conversations.append(
            [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "name": "echo", "content": message},
                {"role": "assistant", "content": "Done."},
            ]
        )
    return conversations


def smoke_model(prompt: str, tokenizer: Any, tool: Any, warmup_steps: int) -> Any:
    """A random 2-layer Qwen2 model, warmed up on `warmup_conversations` until it emits echo tool calls."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(1)  # a model this small trains fastest on one thread
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    input_ids, labels = warmup_batch(prompt, tokenizer, tool)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    started = time.monotonic()
    for _ in range(warmup_steps):
        rows = torch.randint(0, len(input_ids), (8,))
        loss = model(input_ids=input_ids[rows], labels=labels[rows]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"warm-up: {warmup_steps} steps in {time.monotonic() - started:.1f} s, loss {loss.item():.3f}", flush=True)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def warmup_batch(prompt: str, tokenizer: Any, tool: Any) -> tuple[Any, Any]:
    """Token ids of the warm-up conversations, and labels that train only the assistant's turns."""
    import torch

    conversations = warmup_conversations(prompt, 64)
    prompt_length = len(
        tokenizer.apply_chat_template(conversations[0][:1], tools=[tool], add_generation_prompt=True, return_dict=False)
    )
    # The prompt and the first assistant turn, the tool call: what the model must learn to write.
    rows = [tokenizer.apply_chat_template(c[:2], tools=[tool], return_dict=False) for c in conversations]
    width = max(len(row) for row in rows)
    input_ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in rows])
    labels = input_ids.clone()
    labels[:, :prompt_length] = -100
    for i, row in enumerate(rows):
        labels[i, len(row) :] = -100
    return input_ids, labels
