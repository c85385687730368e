#!/usr/bin/env python3
"""peer_transformers.py — the Hugging Face transformers (PyTorch) peer for apex4's GPU engine.

Run on the GPU machine in the same call as `apex4 eval ppl --device cuda`, on the same checkpoint:
  * WikiText-2 test perplexity with the GPTQ/Atom/QuaRot protocol (rows joined with "\\n\\n",
    tokenized once with BOS, numel // seqlen windows, positions 1..seqlen-1 scored) in fp16 with sdpa
    attention: an independent check of apex4's FP16 number;
  * seconds per window of the same forward + loss (CUDA-synchronised wall clock, median after
    warm-up) for "fp16" and for "fake-w4a4-g128", transformers' usual fake-quant route (Atom and QuaRot
    evaluate this way): weights fake-quantized once (symmetric int4, group 128 along K, absmax scale),
    activations quantize-dequantized per token and group of 128 by a forward pre-hook on every
    q/k/v/o/gate/up/down nn.Linear.
Prints one JSON object per line; apex4 itself never imports this file (it is a benchmark peer).

usage: peer_transformers.py --model DIR --wikitext FILE [--seqlen 2048] [--windows N]
                            [--modes fp16,fake-w4a4-g128] [--time-windows 10] [--random-tokens]
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch


def fq_sym(x, bits, group):
    """Symmetric fake-quant along the last dim in groups: q = clamp(round(x/s)), s = absmax/qmax."""
    qmax = 2 ** (bits - 1) - 1
    shape = x.shape
    K = shape[-1]
    g = group if group > 0 else K
    pad = (-K) % g
    xf = x.float()
    if pad:
        xf = torch.nn.functional.pad(xf, (0, pad))
    xg = xf.reshape(-1, g)
    s = (xg.abs().amax(dim=1, keepdim=True) / qmax).half().float()
    q = torch.where(s > 0, torch.clamp(torch.round(xg / s), -qmax - 1, qmax), torch.zeros_like(xg))
    y = (q * s).reshape(*shape[:-1], K + pad)[..., :K]
    return y.to(x.dtype)


def install_fake_w4a4(model, group):
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    hooks = []
    with torch.no_grad():
        for n, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and n.split(".")[-1] in names:
                mod.weight.copy_(fq_sym(mod.weight, 4, group))
                hooks.append(mod.register_forward_pre_hook(lambda m, a: (fq_sym(a[0], 4, group),)))
    return hooks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--wikitext", help="wiki.test.raw (omit with --random-tokens)")
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--windows", type=int, default=0, help="0 = all")
    ap.add_argument("--modes", default="fp16,fake-w4a4-g128")
    ap.add_argument("--time-windows", type=int, default=10)
    ap.add_argument("--random-tokens", action="store_true", help="speed only: random ids, no perplexity")
    ap.add_argument("--random-init", action="store_true",
                    help="speed only: --model is a folder with just config.json; the model is built on the GPU with "
                         "transformers' own init (N(0, initializer_range=0.02) weights, as make-model draws them), "
                         "no checkpoint files; implies --random-tokens")
    a = ap.parse_args()

    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM

    dev = torch.device("cuda")
    t0 = time.time()

    def load():
        if a.random_init:
            from transformers import LlamaConfig
            cfg = LlamaConfig.from_pretrained(a.model)
            torch.manual_seed(0)
            with torch.device("cuda"):
                return LlamaForCausalLM._from_config(cfg, torch_dtype=torch.float16,
                                                     attn_implementation="sdpa").eval()
        return LlamaForCausalLM.from_pretrained(a.model, torch_dtype=torch.float16,
                                                attn_implementation="sdpa").to(dev).eval()

    if a.random_init:
        a.random_tokens = True
    model = load()
    load_s = time.time() - t0
    V = model.config.vocab_size
    if a.random_tokens:
        g = torch.Generator().manual_seed(0)
        nw = max(a.windows, a.time_windows + 2)
        ids = torch.randint(0, V, (nw * a.seqlen,), generator=g)
    else:
        tok = Tokenizer.from_file(a.model + "/tokenizer.json")   # HF tokenizers; BOS by its post-processor
        # HF wikitext-2-raw-v1 rows: one per line of the file, keeping its "\n"; whitespace-only
        # lines become "" (datasets' builder); GPTQ joins the rows with "\n\n" (datasets/wikitext.h)
        with open(a.wikitext, encoding="utf-8") as f:
            rows = [ln if ln.strip() else "" for ln in f.read().splitlines(keepends=True)]
        text = "\n\n".join(rows)
        ids = torch.tensor(tok.encode(text).ids)
    nw = ids.numel() // a.seqlen
    if a.windows:
        nw = min(nw, a.windows)
    ids = ids[: nw * a.seqlen].reshape(nw, a.seqlen)
    print(json.dumps({"peer": "transformers", "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
                      "model": a.model, "tokens": int(ids.numel()), "windows": nw, "seqlen": a.seqlen,
                      "load_s": round(load_s, 2)}), flush=True)
    for mode in a.modes.split(","):
        hooks = []
        if mode.startswith("fake-w4a4-g"):
            hooks = install_fake_w4a4(model, int(mode.split("-g")[1]))
        elif mode != "fp16":
            sys.exit(f"unknown mode {mode}")
        nll_sum, n = 0.0, 0
        times = []
        with torch.no_grad():
            for w in range(nw):
                x = ids[w : w + 1].to(dev)
                torch.cuda.synchronize()
                t = time.perf_counter()
                logits = model(x).logits.float()
                lp = torch.nn.functional.cross_entropy(logits[0, :-1], x[0, 1:], reduction="sum")
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
                nll_sum += lp.item()
                n += a.seqlen - 1
                if a.random_tokens and w + 1 >= a.time_windows + 2:
                    break
        warm = times[2:] if len(times) > 4 else times
        out = {"mode": mode, "s_per_window": statistics.median(warm), "timed_windows": len(warm)}
        if not a.random_tokens:
            out.update({"ppl": math.exp(nll_sum / n), "predictions": n})
        print(json.dumps(out), flush=True)
        for h in hooks:
            h.remove()
        if hooks:  # weights were fake-quantized in place: reload for any later mode
            del model
            model = load()


if __name__ == "__main__":
    main()
