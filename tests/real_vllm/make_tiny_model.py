#!/usr/bin/env python3
"""Writes a tiny random-weight Qwen2 chat model into a directory, made here, never downloaded.

    .real-vllm-venv/bin/python tests/real_vllm/make_tiny_model.py MODEL_DIR [--tool-tokens]

Runs in the real-vLLM venv (tools/real-vllm-venv), whose `transformers` and `tokenizers` are the
ones vLLM loads the model with. What it writes, as `hf download` would leave a model:
- a byte-level BPE tokenizer trained with the `tokenizers` library on the strings below (so any
  text encodes, and common words are single tokens), saved through transformers'
  PreTrainedTokenizerFast with Qwen2's special tokens (<|endoftext|>, <|im_start|>, <|im_end|>)
  and a Qwen-style ChatML chat template (where transformers puts it: chat_template.jinja, or
  tokenizer_config.json's chat_template);
- config.json and model.safetensors of a Qwen2ForCausalLM with seeded random weights:
  2 decoder layers, hidden size 256, 4 attention heads of head_dim 64 (vLLM's CPU attention
  kernels refuse head_dim 16), 2 KV heads, 2048 positions, bfloat16.
With --tool-tokens the tokenizer also has Qwen2.5's tool-call delimiters <tool_call> and
</tool_call> as added tokens (as Qwen2.5's own tokenizer has them), for the hermes tool parser.
Prints the directory's size in bytes on stdout.

    .real-vllm-venv/bin/python tests/real_vllm/make_tiny_model.py ADAPTER_DIR --lora-for MODEL_DIR

writes a PEFT LoRA adapter for that model instead (as `hf download` leaves one): adapter_config.json
(r 8, alpha 16, q_proj and v_proj of every layer) and adapter_model.safetensors with seeded random
A and B matrices in bfloat16, named as PEFT saves them
(base_model.model.model.layers.<i>.self_attn.<module>.lora_<A|B>.weight).
"""

from __future__ import annotations

import sys
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOOL_TOKENS = ["<tool_call>", "</tool_call>"]

# Qwen2.5's ChatML layout without its tool-calling branches (a default system turn, then
# <|im_start|>role\ncontent<|im_end|>\n per message, and the assistant's opening when asked).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

TRAINING_TEXT = [
    "Hello, my name is vLLM and I serve language models behind an nginx proxy.",
    "Say hello. The quick brown fox jumps over the lazy dog.",
    "You are a helpful assistant. Count from one to ten: one two three four five six seven.",
    "The benchmark sends random prompts of fixed length at several concurrency levels.",
    "Streaming responses arrive as server-sent events, one token at a time.",
]

VOCAB_SIZE = 512  # the trained tokenizer's size (bytes, merges and the special tokens)


def make_tokenizer(directory: Path, tool_tokens: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    if tool_tokens:
        fast.add_tokens(TOOL_TOKENS)
    fast.save_pretrained(directory)
    return fast


def make_model(directory: Path, tokenizer) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,  # head_dim = 256 / 4 = 64
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype="bfloat16",
    )
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)


LORA_RANK = 8


def make_lora(directory: Path, model_dir: Path) -> None:
    import json

    import torch
    from safetensors.torch import save_file

    config = json.loads((model_dir / "config.json").read_text())
    hidden = config["hidden_size"]
    head_dim = hidden // config["num_attention_heads"]
    outputs = {"q_proj": hidden, "v_proj": config["num_key_value_heads"] * head_dim}
    torch.manual_seed(1)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for module, out in outputs.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = (torch.randn(LORA_RANK, hidden) * 0.01).to(torch.bfloat16)
            tensors[f"{prefix}.lora_B.weight"] = (torch.randn(out, LORA_RANK) * 0.01).to(torch.bfloat16)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": LORA_RANK, "lora_alpha": 16,
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False, "modules_to_save": None,
        "target_modules": sorted(outputs), "base_model_name_or_path": str(model_dir),
    }, indent=2))


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--lora-for":
        make_lora(Path(argv[0]), Path(argv[2]))
        print(sum(p.stat().st_size for p in Path(argv[0]).rglob("*") if p.is_file()))
        return 0
    if len(argv) not in (1, 2) or argv[1:] not in ([], ["--tool-tokens"]):
        print(__doc__, file=sys.stderr)
        return 2
    directory = Path(argv[0])
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(directory, tool_tokens=argv[1:] == ["--tool-tokens"])
    make_model(directory, tokenizer)
    print(sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
