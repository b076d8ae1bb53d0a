#!/usr/bin/env python3
"""Write a tiny, offline, byte-level fast tokenizer into a model directory.

    .vllm-venv/bin/python tests/conformance/vllm_harness/make_tiny_tokenizer.py MODEL_DIR [--token TOK ...]

Some `vllm serve` flags make create_engine_config load the tokenizer, e.g.
`--reasoning-parser X` (vllm/config/reasoning.py: ReasoningConfig.
initialize_token_ids encodes the parser's start/end strings and fails with
"failed to tokenize reasoning strings" if the vocabulary lacks them). Real
tokenizers cannot be downloaded here, so this builds one with the `tokenizers`
library: 256 byte tokens (GPT-2 byte-to-unicode alphabet, no merges, so any
text encodes) plus special tokens used by common chat / reasoning / tool-call
formats. Token ids therefore differ from the real model's; only the *presence*
of the strings matters for the config checks.

It writes no `model_max_length` into tokenizer_config.json (vLLM caps the context by it only
for pooling models with absolute position embeddings, vllm/config/model.py
ModelConfig.get_and_verify_max_len). tests/fixtures/tiny-tokenizer holds its output.
"""

import argparse
import json
import os

DEFAULT_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<think>", "</think>", "<tool_call>", "</tool_call>",
    "<tool_response>", "</tool_response>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>",
    "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "[TOOL_CALLS]",
    "[THINK]", "[/THINK]",
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--token", action="append", default=[], help="extra special token")
    a = ap.parse_args()

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(set(bytes_to_unicode().values()))
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = list(dict.fromkeys(DEFAULT_SPECIAL + a.token))
    tok.add_special_tokens(specials)
    os.makedirs(a.model_dir, exist_ok=True)
    tok.save(os.path.join(a.model_dir, "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
    }
    with open(os.path.join(a.model_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(f"wrote tokenizer.json ({tok.get_vocab_size()} tokens) and "
          f"tokenizer_config.json to {a.model_dir}")


if __name__ == "__main__":
    main()
