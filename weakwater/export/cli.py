"""``weakwater export hf|gguf`` and ``weakwater import minimind``."""

from __future__ import annotations

import argparse
import json

from weakwater.model.config import PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="export a saved model to Hugging Face or GGUF format")
    export_sub = export.add_subparsers(dest="export_command", metavar="<format>", required=True)

    hf = export_sub.add_parser(
        "hf",
        help="write a LlamaForCausalLM (QK-norm models: Qwen3ForCausalLM) directory that transformers loads "
        "without remote code",
    )
    hf.add_argument("--model", required=True, metavar="DIR", help="saved WeakWater model directory")
    hf.add_argument("--out", required=True, metavar="DIR", help="output directory (replaced if it exists)")
    hf.add_argument("--merge-lora", metavar="ADAPTER_DIR", help="fold this LoRA adapter into the weights first")
    hf.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="weight dtype")
    hf.set_defaults(func=run_export_hf)

    gg = export_sub.add_parser("gguf", help="write one GGUF file for llama.cpp / Ollama (tokenizer embedded)")
    gg.add_argument("--model", required=True, metavar="DIR", help="saved WeakWater model directory")
    gg.add_argument("--out", required=True, metavar="FILE.gguf", help="output file")
    gg.add_argument("--type", default="f16", choices=("f32", "f16", "q8_0"), help="tensor type (default f16)")
    gg.add_argument("--merge-lora", metavar="ADAPTER_DIR", help="fold this LoRA adapter into the weights first")
    gg.set_defaults(func=run_export_gguf)

    imp = sub.add_parser("import", help="convert models trained elsewhere into WeakWater's format")
    imp_sub = imp.add_subparsers(dest="import_command", metavar="<source>", required=True)
    mm = imp_sub.add_parser(
        "minimind", help="convert a MiniMind .pth state dict (MiniMind-3, MiniMind2 or v1; dense only)"
    )
    mm.add_argument(
        "--checkpoint", required=True, metavar="FILE.pth", help="MiniMind state dict, e.g. full_sft_512.pth"
    )
    mm.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    mm.add_argument("--tokenizer", required=True, metavar="DIR", help="the tokenizer the checkpoint was trained with")
    mm.add_argument(
        "--preset", choices=sorted(PRESETS), help="take --n-heads/--max-seq-len from a preset (flags override)"
    )
    mm.add_argument("--n-heads", type=int, help="attention heads (MiniMind-3: read from the weights; older: default 8)")
    mm.add_argument("--max-seq-len", type=int, help="context length the model was trained at (MiniMind: 512)")
    mm.add_argument("--rope-theta", type=float, default=1e6, help="RoPE base (MiniMind2: 1e6)")
    mm.add_argument(
        "--norm-eps", type=float, help="RMSNorm epsilon (default: the layout's, 1e-6 MiniMind-3, 1e-5 older MiniMind)"
    )
    mm.set_defaults(func=run_import_minimind)


def run_export_hf(args: argparse.Namespace) -> int:
    from weakwater.export.hf import export_hf

    out = export_hf(args.model, args.out, merge_adapter=args.merge_lora, dtype=args.dtype)
    print(f"wrote {out} (load with AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0


def run_export_gguf(args: argparse.Namespace) -> int:
    from weakwater.export.gguf import export_gguf

    out = export_gguf(args.model, args.out, tensor_type=args.type, merge_adapter=args.merge_lora)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {args.type})")
    return 0


def run_import_minimind(args: argparse.Namespace) -> int:
    from weakwater.export.minimind import import_minimind
    from weakwater.model.io import read_model_config

    base = PRESETS.get(args.preset, {}) if args.preset else {}
    out = import_minimind(
        args.checkpoint,
        args.out,
        args.tokenizer,
        n_heads=args.n_heads or base.get("n_heads"),
        max_seq_len=args.max_seq_len or base.get("max_seq_len", 512),
        rope_theta=args.rope_theta,
        norm_eps=args.norm_eps,
    )
    config, _ = read_model_config(out)
    print(json.dumps({"out": str(out), "params": config.num_params(), **config.to_dict()}, ensure_ascii=False))
    return 0
