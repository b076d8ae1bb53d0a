"""The conformance corpus: stack configs, as a user writes them, with what the program decides
at preview and what vLLM 0.33.0 decides about the `vllm serve` run that stands for it.

`program` and `vllm` are ACCEPT or REFUSE. They agree, except where `stricter` says why the
program deliberately refuses what vLLM would start; the program never accepts what vLLM
refuses. A refused config names in `natural` the run a user would have got instead: the
program's argv for the config without the `drop`ped keys (and with `set`), plus `flags` (the
offending setting as vLLM reads it), on `instance` (default: the one the config names, else
the one the program picks).

`known_bug` marks a case whose recorded decisions are the right ones but which the program
does not make yet: both tiers run it as a strict xfail with that text, so the mismatch is stated
in every run and the fix turns it into a failure to unmark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

ACCEPT = "accept"
REFUSE = "refuse"


@dataclass(frozen=True)
class Natural:
    drop: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    set: dict[str, Any] = field(default_factory=dict)
    instance: Optional[str] = None


@dataclass(frozen=True)
class Case:
    id: str
    why: str
    config: dict[str, Any]
    program: str = ACCEPT
    natural: Optional[Natural] = None
    vllm: str = ""  # default: the program's decision
    stricter: str = ""
    known_bug: str = ""

    @property
    def vllm_decision(self) -> str:
        return self.vllm or self.program


def _case(id: str, why: str, program: str = ACCEPT, natural: Optional[Natural] = None,
          vllm: str = "", stricter: str = "", known_bug: str = "", **config: Any) -> Case:
    return Case(id, why, config, program, natural, vllm, stricter, known_bug)


def as_params(cases: list[Case]) -> list[Any]:
    """The cases as pytest parameters (id: the case's id), a `known_bug` one as a strict xfail."""
    import pytest

    return [pytest.param(case, id=case.id, marks=pytest.mark.xfail(strict=True, reason=case.known_bug))
            if case.known_bug else pytest.param(case, id=case.id) for case in cases]


def extra(*flags: str) -> Natural:
    """The natural run of a config refused for its vllmExtraArgs: the same flags on the argv."""
    return Natural(drop=("vllmExtraArgs",), flags=flags)




Q7 = "Qwen/Qwen2.5-7B-Instruct"
YARN_X4 = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
LONGROPE_X4 = {  # Phi-3 style: one factor per rotary dimension pair (head_dim 128 -> 64)
    "rope_type": "longrope", "factor": 4.0, "original_max_position_embeddings": 32768,
    "short_factor": [1.0] * 64, "long_factor": [4.0] * 64,
}
LOCAL_GPTQ_14B = "local:qwen2.5-14b-instruct-gptq-int4"

CASES = [
    # --- every catalog family, on the instance the program picks ----------------------------
    _case("qwen2-dev-t4", "the dev stack: qwen2 on a T4 runs float16 (no bfloat16 below sm80)",
          model="Qwen/Qwen2.5-1.5B-Instruct"),
    _case("qwen2-prod-l4", "the prod stack: 16k context, four full-length sequences",
          model=Q7, maxModelLen=16384, minConcurrentSequences=4),
    _case("qwen3-8b", "qwen3 (explicit head_dim)", model="Qwen/Qwen3-8B"),
    _case("qwen3-moe-30b", "qwen3_moe: 128 experts", model="Qwen/Qwen3-30B-A3B"),
    _case("llama-3.1-8b", "llama with llama3 RoPE: max_position_embeddings is already scaled",
          model="meta-llama/Llama-3.1-8B-Instruct"),
    _case("llama-3.1-8b-128k", "the whole 131072-token context llama3 RoPE allows",
          model="meta-llama/Llama-3.1-8B-Instruct", maxModelLen=131072),
    _case("mistral-7b", "mistral", model="mistralai/Mistral-7B-Instruct-v0.3"),
    _case("mixtral-8x7b", "mixtral: 8 experts, tensor parallel", model="mistralai/Mixtral-8x7B-Instruct-v0.1"),
    _case("deepseek-v3-mla", "deepseek_v3: MLA KV cache, fp8 block checkpoint, TP 8 on H200",
          model="deepseek-ai/DeepSeek-V3"),
    _case("gpt-oss-20b", "gpt_oss: mxfp4 experts, sliding/full layers", model="openai/gpt-oss-20b"),
    _case("gpt-oss-120b", "gpt_oss 120b on one 96 GB GPU", model="openai/gpt-oss-120b"),
    _case("gpt-oss-120b-tp8", "gpt_oss 120b over 8 H100", model="openai/gpt-oss-120b",
          instanceType="p5.48xlarge"),
    _case("gemma2-9b", "gemma2: bfloat16, hybrid sliding window", model="google/gemma-2-9b-it"),
    _case("gemma2-2b-auto", "issue 11: gemma2 refuses float16, so not a T4",
          model="google/gemma-2-2b-it"),
    _case("gemma3-1b-auto", "issue 11: gemma3_text refuses float16, so not a T4",
          model="google/gemma-3-1b-it"),
    _case("gemma3-4b", "gemma3 (multimodal): linear RoPE not multiplied for gemma3",
          model="google/gemma-3-4b-it"),
    _case("gemma3-27b", "gemma3 27b", model="google/gemma-3-27b-it"),
    _case("qwen3-moe-235b", "qwen3_moe 235B over 8 GPUs", model="Qwen/Qwen3-235B-A22B"),
    _case("mixtral-8xa10g", "mixtral over 8 A10G", model="mistralai/Mixtral-8x7B-Instruct-v0.1",
          instanceType="g5.48xlarge"),
    _case("glm4-9b", "glm4: partial rotary, bfloat16", model="zai-org/GLM-4-9B-0414"),
    # --- quantization -------------------------------------------------------------------------
    _case("awq-7b-t4", "awq checkpoint on a T4 (float16)", model="Qwen/Qwen2.5-7B-Instruct-AWQ"),
    _case("gptq-7b-t4", "gptq checkpoint on a T4", model="Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4"),
    _case("fp8-online-l4", "fp8 quantized online on an L4 (sm89)", model=Q7, quantization="fp8"),
    _case("fp8-online-t4", "fp8 on a T4 runs weight-only through FP8 Marlin (sm75+)",
          model="Qwen/Qwen2.5-1.5B-Instruct", quantization="fp8", instanceType="g4dn.xlarge"),
    _case("fp8-online-a10g", "fp8 on an A10G (sm86): FP8 Marlin too", model=Q7,
          quantization="fp8", instanceType="g5.xlarge", maxModelLen=8192),
    _case("fbgemm-fp8-405b", "fbgemm_fp8 checkpoint, deprecated in 0.33: needs the opt-in flag",
          model="meta-llama/Llama-3.1-405B-Instruct-FP8"),
    _case("fbgemm-fp8-a100", "fbgemm_fp8 runs from sm80: 8 A100 80GB",
          model="meta-llama/Llama-3.1-405B-Instruct-FP8", instanceType="p4de.24xlarge"),
    _case("mxfp4-t4", "mxfp4 needs sm80", program=REFUSE,
          natural=Natural(drop=("instanceType",), flags=("--dtype", "auto"), instance="g4dn.xlarge"),
          model="openai/gpt-oss-20b", instanceType="g4dn.xlarge"),
    _case("awq-14b-g5.48xl", "issue 11: 14B AWQ on 8 A10G gets TP 4 (13824/8 splits a group)",
          model="Qwen/Qwen2.5-14B-Instruct-AWQ", instanceType="g5.48xlarge"),
    _case("awq-14b-tp8", "AWQ down_proj shard 1728 is no multiple of 128", program=REFUSE,
          natural=Natural(drop=("tensorParallelSize",), flags=("--tensor-parallel-size", "8")),
          model="Qwen/Qwen2.5-14B-Instruct-AWQ", instanceType="g5.48xlarge", tensorParallelSize=8),
    _case("awq-72b-tp4", "72B AWQ (29696 padded) on 4 L40S", model="Qwen/Qwen2.5-72B-Instruct-AWQ",
          instanceType="g6e.12xlarge"),
    _case("awq-72b-tp8", "72B AWQ at TP 8: 3712 per GPU is 29 groups",
          model="Qwen/Qwen2.5-72B-Instruct-AWQ", instanceType="g6e.48xlarge", tensorParallelSize=8),
    _case("gptq-14b-local-tp4", "a local GPTQ directory, sized from its config.json",
          model=LOCAL_GPTQ_14B, instanceType="g5.12xlarge"),
    _case("gptq-14b-local-tp8", "GPTQ at TP 8: down_proj's group scales would load misaligned",
          program=REFUSE, natural=Natural(drop=("tensorParallelSize",), flags=("--tensor-parallel-size", "8")),
          model=LOCAL_GPTQ_14B, instanceType="g5.48xlarge", tensorParallelSize=8),
    _case("awq-on-16bit", "quantization awq on an unquantized checkpoint", program=REFUSE,
          natural=Natural(drop=("quantization",), flags=("--quantization", "awq")),
          model=Q7, quantization="awq"),
    _case("fp8-on-awq", "quantization fp8 on an AWQ checkpoint", program=REFUSE,
          natural=Natural(drop=("quantization",), flags=("--quantization", "fp8")),
          model="Qwen/Qwen2.5-7B-Instruct-AWQ", quantization="fp8", instanceType="g6.xlarge"),
    _case("kv-fp8-l4", "fp8 KV cache: half the bytes per token", model=Q7, kvCacheDtype="fp8"),
    _case("kv-fp8-t4", "fp8 KV cache on a T4 (Triton attention stores fp8 on any GPU)",
          model="Qwen/Qwen2.5-1.5B-Instruct", kvCacheDtype="fp8", instanceType="g4dn.xlarge"),
    _case("quant-awq-explicit", "quantization awq names the checkpoint's own method",
          model="Qwen/Qwen2.5-7B-Instruct-AWQ", quantization="awq"),
    _case("quant-awq-marlin", "quantization awq_marlin", model="Qwen/Qwen2.5-7B-Instruct-AWQ",
          quantization="awq_marlin"),
    _case("quant-gptq-explicit", "quantization gptq", model="Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4",
          quantization="gptq"),
    _case("quant-gptq-marlin", "quantization gptq_marlin",
          model="Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", quantization="gptq_marlin"),
    _case("quant-mxfp4-explicit", "quantization mxfp4 on gpt-oss", model="openai/gpt-oss-20b",
          quantization="mxfp4"),
    _case("quant-fp8-on-fp8", "quantization fp8 on an fp8 checkpoint",
          model="deepseek-ai/DeepSeek-V3", quantization="fp8"),
    _case("quant-fp8-on-fbgemm", "quantization fp8 on an fbgemm_fp8 checkpoint", program=REFUSE,
          natural=Natural(drop=("quantization",), flags=("--quantization", "fp8")),
          model="meta-llama/Llama-3.1-405B-Instruct-FP8", quantization="fp8"),
    _case("awq-bf16", "bfloat16 activations on an AWQ (float16) checkpoint",
          model="Qwen/Qwen2.5-7B-Instruct-AWQ", dtype="bfloat16"),
    _case("kv-fp8-mla", "fp8 KV cache of an MLA latent", model="deepseek-ai/DeepSeek-V3",
          kvCacheDtype="fp8"),
    # --- RoPE and the context length ----------------------------------------------------------
    _case("yarn-x4-64k", "issue 11: yarn x4 at 65536 on Qwen2.5-7B (vLLM does not multiply yarn)",
          model=Q7, ropeScaling=YARN_X4, maxModelLen=65536),
    _case("yarn-readme-example", "the README's ropeScaling example, the whole 131072 tokens",
          model=Q7, ropeScaling=YARN_X4, maxModelLen=131072),
    _case("yarn-x2-131k", "yarn x2 reaches 65536, not 131072", program=REFUSE,
          natural=Natural(drop=("maxModelLen",), flags=("--max-model-len", "131072")),
          model=Q7, ropeScaling={**YARN_X4, "factor": 2.0}, maxModelLen=131072),
    _case("linear-x2-64k", "linear: vLLM multiplies max_position_embeddings by the factor",
          model=Q7, ropeScaling={"rope_type": "linear", "factor": 2.0}, maxModelLen=65536),
    _case("dynamic-x2-64k", "dynamic NTK on mistral", model="mistralai/Mistral-7B-Instruct-v0.3",
          ropeScaling={"rope_type": "dynamic", "factor": 2.0}, maxModelLen=65536),
    _case("longrope-x4-64k", "longrope with its per-dimension factors", model=Q7,
          ropeScaling=LONGROPE_X4, maxModelLen=65536),
    _case("longrope-no-factors", "longrope without short_factor/long_factor", program=REFUSE,
          natural=Natural(drop=("ropeScaling",), set={"maxModelLen": 32768}, flags=(
              "--hf-overrides", '{"max_position_embeddings":131072,"rope_parameters":'
              '{"factor":4.0,"original_max_position_embeddings":32768,"rope_theta":1000000.0,'
              '"rope_type":"longrope"}}', "--max-model-len", "65536")),
          model=Q7, ropeScaling={"rope_type": "longrope", "factor": 4.0,
                                 "original_max_position_embeddings": 32768}, maxModelLen=65536),
    _case("llama3-rope-no-freqs", "llama3 RoPE without low/high_freq_factor", program=REFUSE,
          natural=Natural(drop=("ropeScaling",), set={"maxModelLen": 32768}, flags=(
              "--hf-overrides", '{"max_position_embeddings":131072,"rope_parameters":'
              '{"factor":4.0,"original_max_position_embeddings":32768,"rope_theta":1000000.0,'
              '"rope_type":"llama3"}}', "--max-model-len", "65536")),
          model=Q7, ropeScaling={"rope_type": "llama3", "factor": 4.0}, maxModelLen=65536),
    _case("gemma3-128k", "gemma3's 131072 tokens: vLLM skips its RoPE factor",
          model="google/gemma-3-4b-it", maxModelLen=131072),
    _case("yarn-on-llama3", "ropeScaling replaces llama3 RoPE: yarn x2 of 131072",
          model="meta-llama/Llama-3.1-8B-Instruct", ropeScaling={"rope_type": "yarn", "factor": 2.0},
          maxModelLen=262144, minConcurrentSequences=1),
    _case("rope-legacy-type-key", "ropeScaling with the legacy key type", model=Q7,
          ropeScaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
          maxModelLen=65536),
    _case("qwen3-yarn-x4", "qwen3 yarn x4 of 32768 (its model card's recipe)", model="Qwen/Qwen3-8B",
          ropeScaling=YARN_X4, maxModelLen=131072, minConcurrentSequences=1),
    _case("context-too-long", "65536 on a 32768 model without ropeScaling", program=REFUSE,
          natural=Natural(drop=("maxModelLen",), flags=("--max-model-len", "65536")),
          model=Q7, maxModelLen=65536),
    _case("gemma2-context", "gemma2's 8192 tokens", program=REFUSE,
          natural=Natural(drop=("maxModelLen",), flags=("--max-model-len", "16384")),
          model="google/gemma-2-9b-it", maxModelLen=16384),
    # --- tensor parallelism on 4 and 8 GPUs ---------------------------------------------------
    _case("tp4-qwen7b", "TP 4 on 4 A10G: 4 KV heads, one per GPU", model=Q7,
          tensorParallelSize=4, instanceType="g5.12xlarge"),
    _case("tp4-kv-replicated", "TP 4 with 2 KV heads: each GPU keeps one",
          model="Qwen/Qwen2.5-1.5B-Instruct", tensorParallelSize=4, instanceType="g4dn.12xlarge"),
    _case("tp8-qwen14b", "TP 8 on 8 L4: 40 heads, 8 KV heads", model="Qwen/Qwen2.5-14B-Instruct",
          tensorParallelSize=8, instanceType="g6.48xlarge"),
    _case("tp8-llama70b-a100", "TP 8 on p4d (A100: small batch defaults)",
          model="meta-llama/Llama-3.1-70B-Instruct", instanceType="p4d.24xlarge"),
    _case("tp-auto-72b", "72B: the program's TP choice", model="Qwen/Qwen2.5-72B-Instruct"),
    _case("tp8-b200", "TP 8 on B200 (the 160 GiB batch defaults)", model="Qwen/Qwen2.5-72B-Instruct",
          instanceType="p6-b200.48xlarge"),
    _case("tp8-qwen7b", "28 heads do not split 8 ways", program=REFUSE,
          natural=Natural(drop=("tensorParallelSize",), flags=("--tensor-parallel-size", "8")),
          model=Q7, tensorParallelSize=8, instanceType="g5.48xlarge"),
    _case("tp2-one-gpu", "TP 2 on a one-GPU host", program=REFUSE,
          natural=Natural(drop=("tensorParallelSize",), flags=("--tensor-parallel-size", "2")),
          model=Q7, tensorParallelSize=2, instanceType="g6.xlarge", maxModelLen=16384),
    # --- vllmExtraArgs, each kind of issue 11 item 6 -----------------------------------------
    _case("xa-json-not-json", "issue 11: a JSON flag given key=value", program=REFUSE,
          natural=extra("--limit-mm-per-prompt", "image=4"),
          model="google/gemma-3-4b-it", vllmExtraArgs=["--limit-mm-per-prompt", "image=4"]),
    _case("xa-json", "a JSON flag with JSON", model="google/gemma-3-4b-it",
          vllmExtraArgs=["--limit-mm-per-prompt", '{"image": 4}']),
    _case("xa-json-dotted", "a JSON flag's key set with a dotted name",
          model="google/gemma-3-4b-it", vllmExtraArgs=["--limit-mm-per-prompt.image", "2"]),
    _case("xa-spec-not-json", "issue 11: --speculative-config ngram", program=REFUSE,
          natural=extra("--speculative-config", "ngram"),
          model=Q7, vllmExtraArgs=["--speculative-config", "ngram"]),
    _case("xa-spec-ngram", "speculative decoding config as JSON", model=Q7, vllmExtraArgs=[
        "--speculative-config", '{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4}']),
    _case("xa-tool-no-parser", "issue 11: auto tool choice needs a parser", program=REFUSE,
          natural=extra("--enable-auto-tool-choice"), model=Q7,
          vllmExtraArgs=["--enable-auto-tool-choice"]),
    _case("xa-tool-hermes", "auto tool choice with a registered parser", model=Q7,
          vllmExtraArgs=["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]),
    _case("xa-tool-hermes2", "issue 11: an unregistered tool parser", program=REFUSE,
          natural=extra("--enable-auto-tool-choice", "--tool-call-parser", "hermes2"), model=Q7,
          vllmExtraArgs=["--enable-auto-tool-choice", "--tool-call-parser", "hermes2"]),
    _case("xa-reasoning-typo", "issue 11: reasoning parser deepseek-r1 (it is deepseek_r1)",
          program=REFUSE, natural=extra("--reasoning-parser", "deepseek-r1"),
          model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
          vllmExtraArgs=["--reasoning-parser", "deepseek-r1"]),
    _case("xa-reasoning", "a registered reasoning parser (vLLM loads the tokenizer for it)",
          model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
          vllmExtraArgs=["--reasoning-parser", "deepseek_r1"]),
    _case("xa-choice-typo", "issue 11: a value outside a config field's choices", program=REFUSE,
          natural=extra("--structured-outputs-config.backend", "xgrammer"), model=Q7,
          vllmExtraArgs=["--structured-outputs-config.backend", "xgrammer"]),
    _case("xa-choice", "a config field's choice", model=Q7,
          vllmExtraArgs=["--structured-outputs-config.backend", "guidance"]),
    _case("xa-flag-choice-typo", "a value outside a flag's choices", program=REFUSE,
          natural=extra("--scheduling-policy", "priorty"), model=Q7,
          vllmExtraArgs=["--scheduling-policy", "priorty"]),
    _case("xa-flag-choice", "a flag's choice", model=Q7, vllmExtraArgs=["--scheduling-policy", "priority"]),
    _case("xa-path-outside", "issue 11: a file the container cannot see", program=REFUSE,
          natural=extra("--chat-template", "/home/me/t.jinja"), model=Q7,
          vllmExtraArgs=["--chat-template", "/home/me/t.jinja"]),
    _case("xa-inline-template", "a chat template given inline", model=Q7,
          vllmExtraArgs=["--chat-template", "{% for m in messages %}{{ m.content }}{% endfor %}"]),
    _case("xa-log-outputs", "--enable-log-outputs needs --enable-log-requests", program=REFUSE,
          natural=extra("--enable-log-outputs"), model=Q7, vllmExtraArgs=["--enable-log-outputs"]),
    _case("xa-unknown-flag", "a flag vLLM 0.33 does not have", program=REFUSE,
          natural=extra("--enable-prefix-cache"), model=Q7, vllmExtraArgs=["--enable-prefix-cache"]),
    _case("xa-no-prefix-caching", "issue 11: the --no- form of a switch",
          model=Q7, vllmExtraArgs=["--no-enable-prefix-caching"]),
    _case("xa-disable-form", "the --disable- form of an --enable- switch", model=Q7,
          vllmExtraArgs=["--disable-prefix-caching"]),
    _case("xa-managed-flag", "a flag the stack sets from its own key", program=REFUSE, vllm=ACCEPT,
          stricter="--max-model-len belongs to maxModelLen, which the sizing reads",
          natural=extra("--max-model-len", "8192"), model=Q7, vllmExtraArgs=["--max-model-len", "8192"]),
    _case("xa-lora-rank-choice", "--max-lora-rank outside its choices", program=REFUSE,
          natural=extra("--enable-lora", "--max-lora-rank", "7"), model=Q7,
          vllmExtraArgs=["--enable-lora", "--max-lora-rank", "7"]),
    _case("xa-lora", "LoRA with a valid rank", model=Q7, vllmExtraArgs=["--enable-lora", "--max-lora-rank", "64"]),
    _case("xa-mm-on-text-model", "a multimodal limit on a text model (ignored by vLLM)", model=Q7,
          vllmExtraArgs=["--limit-mm-per-prompt", '{"image": 2}']),
    _case("xa-tool-parser-alone", "a tool parser without auto tool choice (unused, accepted)",
          model=Q7, vllmExtraArgs=["--tool-call-parser", "hermes"]),
    _case("xa-active-seqs", "--max-num-active-seqs above max_num_seqs", program=REFUSE,
          natural=extra("--max-num-active-seqs", "512"), model=Q7,
          vllmExtraArgs=["--max-num-active-seqs", "512"]),
    _case("xa-long-prefill", "--long-prefill-token-threshold above maxModelLen", program=REFUSE,
          natural=extra("--long-prefill-token-threshold", "9000"), model=Q7, maxModelLen=8192,
          vllmExtraArgs=["--long-prefill-token-threshold", "9000"]),
    _case("xa-effort-map", "--reasoning-effort-map with an unknown effort", program=REFUSE,
          natural=extra("--reasoning-effort-map", '{"extreme": "x"}'), model=Q7,
          vllmExtraArgs=["--reasoning-effort-map", '{"extreme": "x"}']),
    _case("xa-sse-negative", "--sse-keep-alive-interval below 0", program=REFUSE,
          natural=extra("--sse-keep-alive-interval", "-1"), model=Q7,
          vllmExtraArgs=["--sse-keep-alive-interval", "-1"]),
    _case("xa-human-size", "a byte count written 4G", model=Q7,
          vllmExtraArgs=["--kv-cache-memory-bytes", "4G"]),
    _case("xa-hf-overrides-other", "--hf-overrides of a key unrelated to the context", model=Q7,
          vllmExtraArgs=["--hf-overrides", '{"attention_dropout": 0.0}']),
    _case("xa-optimization-level", "-O0 (vLLM's own shorthand)", model=Q7, vllmExtraArgs=["-O0"]),
    _case("xa-enforce-eager", "a plain switch", model=Q7, vllmExtraArgs=["--enforce-eager"]),
    _case("xa-tokenizer-mode", "a tokenizer mode vLLM has no tokenizer for (checked when it loads one)",
          program=REFUSE, natural=extra("--tokenizer-mode", "slow"), model=Q7,
          vllmExtraArgs=["--tokenizer-mode", "slow"]),
    _case("xa-numa-nodes-alone", "--numa-bind-nodes needs --numa-bind", program=REFUSE,
          natural=extra("--numa-bind-nodes", "0"), model=Q7, vllmExtraArgs=["--numa-bind-nodes", "0"]),
    _case("xa-sleep-mode", "sleep mode (the cumem allocator)", model=Q7,
          vllmExtraArgs=["--enable-sleep-mode"]),
    _case("xa-config-object-old-key", "a config object's key vLLM 0.33 no longer has", program=REFUSE,
          natural=extra("--compilation-config", '{"level": 3}'), model=Q7,
          vllmExtraArgs=["--compilation-config", '{"level": 3}']),
    _case("xa-config-object", "a config object's keys as JSON", model=Q7,
          vllmExtraArgs=["--compilation-config", '{"cudagraph_mode": "FULL_DECODE_ONLY"}']),
    _case("xa-whitespace-needs-backend", "disable_any_whitespace with the auto backend",
          program=REFUSE, natural=extra("--structured-outputs-config.disable_any_whitespace", "true"),
          model=Q7, vllmExtraArgs=["--structured-outputs-config.disable_any_whitespace", "true"]),
    _case("xa-removed-flag", "a flag removed before 0.33", program=REFUSE,
          natural=extra("--swap-space", "4"), model=Q7, vllmExtraArgs=["--swap-space", "4"]),
    _case("xa-spec-no-draft", "speculative method eagle without its draft model", program=REFUSE,
          natural=extra("--speculative-config", '{"method": "eagle", "num_speculative_tokens": 2}'),
          model=Q7, vllmExtraArgs=["--speculative-config", '{"method": "eagle", "num_speculative_tokens": 2}']),
    _case("xa-spec-draft-hub-id", "a draft model the offline container cannot fetch", program=REFUSE,
          natural=extra("--speculative-config", '{"model": "Qwen/Qwen2.5-0.5B-Instruct", "num_speculative_tokens": 3}'),
          model=Q7, vllmExtraArgs=["--speculative-config",
                                   '{"model": "Qwen/Qwen2.5-0.5B-Instruct", "num_speculative_tokens": 3}']),
    _case("xa-ep-dense", "issue 11: expert parallel on a dense model", program=REFUSE,
          natural=extra("--enable-expert-parallel"), model=Q7,
          vllmExtraArgs=["--enable-expert-parallel"]),
    _case("xa-ep-moe", "expert parallel on a MoE model over 4 GPUs", model="Qwen/Qwen3-30B-A3B",
          instanceType="g6e.12xlarge", vllmExtraArgs=["--enable-expert-parallel"]),
    _case("xa-dp2-one-gpu", "issue 11: data parallel 2 on a one-GPU host", program=REFUSE,
          natural=Natural(drop=("vllmExtraArgs",), flags=("--data-parallel-size", "2"),
                          instance="g6.xlarge"),
          model=Q7, instanceType="g6.xlarge", maxModelLen=16384,
          vllmExtraArgs=["--data-parallel-size", "2"]),
    _case("xa-dp2-tp2", "DP 2 x TP 2 on 4 GPUs (the short -dp form)", model=Q7,
          instanceType="g6.12xlarge", vllmExtraArgs=["-dp", "2"]),
    _case("xa-dp2-tp4", "DP 2 x TP 4 needs 8 GPUs, the host has 4", program=REFUSE,
          natural=Natural(drop=("vllmExtraArgs",), flags=("--data-parallel-size", "2")),
          model=Q7, instanceType="g6.12xlarge", tensorParallelSize=4,
          vllmExtraArgs=["--data-parallel-size", "2"]),
    _case("xa-single-server-dense", "external load balancing of a dense model", program=REFUSE,
          natural=extra("--data-parallel-size", "2", "--data-parallel-external-lb"), model=Q7,
          instanceType="g6.12xlarge", vllmExtraArgs=["--data-parallel-size", "2", "--data-parallel-external-lb"]),
    _case("xa-single-server-moe", "external load balancing without a rank", program=REFUSE,
          natural=extra("--data-parallel-size", "2", "--data-parallel-external-lb"),
          model="Qwen/Qwen3-30B-A3B", instanceType="g6e.12xlarge",
          vllmExtraArgs=["--data-parallel-size", "2", "--data-parallel-external-lb"]),
    _case("xa-single-server-rank", "rank 0 of a data-parallel group served by two servers",
          program=REFUSE, vllm=ACCEPT, stricter="vLLM starts rank 0 and waits for rank 1 on "
          "another server; this stack runs one server",
          natural=extra("--data-parallel-size", "2", "--data-parallel-rank", "0"),
          model="Qwen/Qwen3-30B-A3B", instanceType="g6e.12xlarge",
          vllmExtraArgs=["--data-parallel-size", "2", "--data-parallel-rank", "0"]),
    _case("xa-dp-size-local", "--data-parallel-size-local above --data-parallel-size",
          program=REFUSE, natural=extra("--data-parallel-size-local", "2"), model=Q7,
          instanceType="g6.12xlarge", vllmExtraArgs=["--data-parallel-size-local", "2"]),
    _case("xa-pcp2", "prefill context parallel 2 x TP 2 on 4 GPUs", model=Q7,
          instanceType="g6.12xlarge", vllmExtraArgs=["-pcp", "2"]),
    _case("xa-dcp-no-tp", "decode context parallel 2 needs TP ranks to split", program=REFUSE,
          natural=extra("--decode-context-parallel-size", "2"), model=Q7,
          vllmExtraArgs=["--decode-context-parallel-size", "2"]),
    _case("xa-dcp-gqa", "decode context parallel with GQA needs TP above the KV heads",
          program=REFUSE, natural=extra("-dcp", "2"), model=Q7, instanceType="g6.12xlarge",
          tensorParallelSize=4, vllmExtraArgs=["-dcp", "2"]),
    _case("xa-dcp-mla", "decode context parallel over the TP ranks of an MLA model",
          model="deepseek-ai/DeepSeek-V3", vllmExtraArgs=["-dcp", "8"]),
    _case("xa-eplb", "expert-parallel load balancing over 4 GPUs", model="Qwen/Qwen3-30B-A3B",
          instanceType="g6e.12xlarge", vllmExtraArgs=["--enable-expert-parallel", "--enable-eplb"]),
    _case("xa-eplb-one-gpu", "EPLB with one GPU in the expert-parallel group", program=REFUSE,
          natural=extra("--enable-expert-parallel", "--enable-eplb"), model="Qwen/Qwen3-30B-A3B",
          vllmExtraArgs=["--enable-expert-parallel", "--enable-eplb"]),
    _case("xa-eplb-without-ep", "EPLB without expert parallelism", program=REFUSE,
          natural=extra("--enable-eplb"), model="Qwen/Qwen3-30B-A3B", instanceType="g6e.12xlarge",
          vllmExtraArgs=["--enable-eplb"]),
    _case("xa-redundant-experts", "redundant experts without EPLB", program=REFUSE,
          natural=extra("--enable-expert-parallel", "--eplb-config", '{"num_redundant_experts": 2}'),
          model="Qwen/Qwen3-30B-A3B", instanceType="g6e.12xlarge",
          vllmExtraArgs=["--enable-expert-parallel", "--eplb-config", '{"num_redundant_experts": 2}']),
    # --- pipeline parallel across nodes (issue 15): TP inside a node, PP across, Ray ------------
    _case("pp2-single-node", "pipeline parallel 2 with nodes left at 1", program=REFUSE, vllm=ACCEPT,
          stricter="pipelineParallelSize puts one stage on each node (config.rules), so it "
          "needs nodes 2; vLLM would run both stages on this one host (mp executor)",
          natural=Natural(drop=("pipelineParallelSize", "tensorParallelSize"),
                          flags=("--tensor-parallel-size", "2", "--pipeline-parallel-size", "2")),
          model=Q7, instanceType="g6.12xlarge", pipelineParallelSize=2, tensorParallelSize=2),
    _case("pp-llama405b-2-nodes", "issue 15: Llama-3.1-405B at bf16 on 2 x p4de, TP 8, PP 2 (63/63)",
          model="meta-llama/Llama-3.1-405B-Instruct", nodes=2),
    _case("pp-deepseek-r1-2-nodes", "DeepSeek-R1 (61 layers, MLA, fp8 blocks) on two nodes: 31/30",
          model="deepseek-ai/DeepSeek-R1", nodes=2),
    _case("pp-llama405b-4-nodes", "126 layers over 4 stages: the remainder to the middle (31/32/32/31)",
          model="meta-llama/Llama-3.1-405B-Instruct", pipelineParallelSize=4, nodes=4),
    _case("pp-qwen72b-2-nodes", "a 72B forced onto 2 one-GPU nodes: world size 2, 1 GPU per node",
          model="Qwen/Qwen2.5-72B-Instruct", nodes=2),
    _case("pp-qwen72b-pp-auto", "pipelineParallelSize 2 with nodes auto", model="Qwen/Qwen2.5-72B-Instruct",
          pipelineParallelSize=2, nodes="auto"),
    _case("pp-qwen7b-8-nodes", "28 layers over 8 T4 nodes: remainder 4 (3/3/3/4/4/4/4/3), float16",
          model=Q7, nodes=8),
    _case("pp-qwen3-moe-2-nodes", "qwen3_moe across nodes", model="Qwen/Qwen3-235B-A22B", nodes=2),
    _case("pp-gemma2-2-nodes", "gemma2 across nodes: sliding and full layers split between stages",
          model="google/gemma-2-9b-it", nodes=2),
    _case("pp-nodes-mismatch", "pipelineParallelSize 2 on 3 nodes", program=REFUSE, vllm=ACCEPT,
          stricter="vLLM would run 2 stages (8 GPUs) on a 3-node Ray cluster and leave a node idle",
          natural=Natural(drop=("pipelineParallelSize",), flags=("--pipeline-parallel-size", "2")),
          model="meta-llama/Llama-3.1-405B-Instruct", nodes=3, pipelineParallelSize=2),
    _case("pp-backend-mp", "--distributed-executor-backend mp across nodes", program=REFUSE,
          natural=extra("--distributed-executor-backend", "mp"),
          model="meta-llama/Llama-3.1-405B-Instruct", nodes=2,
          vllmExtraArgs=["--distributed-executor-backend", "mp"]),
    # --- batch limits -------------------------------------------------------------------------
    _case("batch-seqs-4096", "issue 11: maxNumSeqs 4096 raises the token budget to 4096",
          model=Q7, maxNumSeqs=4096),
    _case("batch-512-256", "issue 11: 256 batched tokens < 512 sequences", program=REFUSE,
          natural=Natural(drop=("maxNumBatchedTokens",), flags=("--max-num-batched-tokens", "256")),
          model=Q7, maxNumSeqs=512, maxNumBatchedTokens=256),
    _case("batch-both-set", "both limits set consistently", model=Q7, maxNumSeqs=64,
          maxNumBatchedTokens=8192),
    _case("batch-no-chunked-prefill", "chunked prefill off: a prompt must fit one batch",
          model=Q7, maxModelLen=16384, vllmExtraArgs=["--no-enable-chunked-prefill"]),
    _case("batch-no-chunked-too-small", "chunked prefill off with 4096 tokens < maxModelLen 8192",
          program=REFUSE, natural=Natural(drop=("maxNumBatchedTokens",),
                                          flags=("--max-num-batched-tokens", "4096")),
          model=Q7, maxModelLen=8192, maxNumBatchedTokens=4096,
          vllmExtraArgs=["--no-enable-chunked-prefill"]),
    _case("batch-throughput-mode", "performance mode throughput doubles the defaults", model=Q7,
          vllmExtraArgs=["--performance-mode", "throughput"]),
    _case("batch-throughput-seqs", "throughput mode with maxNumSeqs set", model=Q7, maxNumSeqs=1024,
          vllmExtraArgs=["--performance-mode", "throughput"]),
    _case("batch-no-chunked-many-seqs", "chunked prefill off with more sequences than tokens",
          model=Q7, maxModelLen=4096, maxNumSeqs=8192, vllmExtraArgs=["--no-enable-chunked-prefill"]),
    # --- dtype per model type and GPU ---------------------------------------------------------
    _case("dtype-gemma2-fp16", "issue 11: float16 on gemma2", program=REFUSE,
          natural=Natural(drop=("dtype",), flags=("--dtype", "float16")),
          model="google/gemma-2-2b-it", dtype="float16"),
    _case("dtype-gemma3-fp16", "float16 on gemma3_text", program=REFUSE,
          natural=Natural(drop=("dtype",), flags=("--dtype", "float16")),
          model="google/gemma-3-1b-it", dtype="float16"),
    _case("dtype-glm4-fp16", "float16 on glm4", program=REFUSE,
          natural=Natural(drop=("dtype",), flags=("--dtype", "float16")),
          model="zai-org/GLM-4-9B-0414", dtype="float16"),
    _case("dtype-bf16-t4", "bfloat16 on a T4", program=REFUSE,
          natural=Natural(drop=("dtype",), flags=("--dtype", "bfloat16")),
          model="Qwen/Qwen2.5-1.5B-Instruct", dtype="bfloat16", instanceType="g4dn.xlarge"),
    _case("dtype-gemma2-t4", "issue 11: gemma-2-2b-it on a T4", program=REFUSE, vllm=ACCEPT,
          stricter="vLLM runs it in float32 there; the sizing counts 16-bit activations only "
          "(formats.resolve_dtype)",
          natural=Natural(drop=("instanceType",), flags=("--dtype", "auto"), instance="g4dn.xlarge"),
          model="google/gemma-2-2b-it", instanceType="g4dn.xlarge"),
    _case("dtype-gemma3-t4", "issue 11: gemma-3-1b-it on a T4", program=REFUSE, vllm=ACCEPT,
          stricter="vLLM runs it in float32 there; the sizing counts 16-bit activations only "
          "(formats.resolve_dtype)",
          natural=Natural(drop=("instanceType",), flags=("--dtype", "auto"), instance="g4dn.xlarge"),
          model="google/gemma-3-1b-it", instanceType="g4dn.xlarge"),
    _case("dtype-fp16-l4", "float16 asked on a bfloat16 GPU", model=Q7, dtype="float16"),
    # --- GPU memory at startup ----------------------------------------------------------------
    _case("gmu-0.99-l4", "issue 11: 0.99 of an L4 is not free once the CUDA context exists",
          program=REFUSE, natural=Natural(drop=("gpuMemoryUtilization",),
                                          flags=("--gpu-memory-utilization", "0.99")),
          model=Q7, gpuMemoryUtilization=0.99, instanceType="g6.xlarge", maxModelLen=16384),
    _case("gmu-0.99-auto", "0.99 with instanceType auto: a GPU where it is still free", model=Q7,
          gpuMemoryUtilization=0.99),
    _case("gmu-0.95", "0.95 on an L4 is still free", model=Q7, gpuMemoryUtilization=0.95),
    _case("gmu-0.98-h100", "0.98 on an H100", model=Q7, gpuMemoryUtilization=0.98,
          instanceType="p5.4xlarge"),
    _case("gmu-0.97-tp4", "0.97 at TP 4 (NCCL takes more before the check)", model=Q7,
          gpuMemoryUtilization=0.97, instanceType="g6e.12xlarge", tensorParallelSize=4),
    # --- issue 28: tool calling and reasoning from the family catalog -------------------------
    _case("tools-qwen-hermes", "toolCalling: Qwen2.5's parser (hermes) from the catalog",
          model=Q7, toolCalling=True),
    _case("tools-qwen3-reasoning", "toolCalling and reasoningParser auto on Qwen3 (hermes, qwen3)",
          model="Qwen/Qwen3-8B", toolCalling=True, reasoningParser="auto"),
    _case("tools-llama-example-template", "toolCalling on Llama 3.1: llama3_json and the image's "
          "example template /vllm-workspace/examples/tool_chat_template_llama3.1_json.jinja "
          "(a stand-in file here: the wheel ships no examples/)",
          model="meta-llama/Llama-3.1-8B-Instruct", toolCalling=True),
    _case("tools-unregistered", "toolCallParser qwen3: no such tool parser in 0.33 (P21)",
          program=REFUSE, model=Q7, toolCalling=True, toolCallParser="qwen3",
          natural=Natural(drop=("toolCalling", "toolCallParser"),
                          flags=("--enable-auto-tool-choice", "--tool-call-parser", "qwen3"))),
]
