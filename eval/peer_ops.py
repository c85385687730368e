#!/usr/bin/env python3
"""peer_ops.py — PyTorch timings of the pieces of one LLaMA-2-7B-shaped fp16 forward (seqlen 2048):
the projections as separate and as concatenated (q|k|v, gate|up) cuBLAS matmuls, sdpa causal attention,
and a breakdown of a Hugging Face LlamaForCausalLM forward by torch.profiler (optional --model).
A benchmark peer for finding where apex4's GPU engine loses time; apex4 never imports it.
usage: peer_ops.py [--T 2048] [--model DIR]"""
import argparse
import json

import torch
import torch.nn.functional as F


def bench(fn, iters=20, warm=5):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=2048)
    ap.add_argument("--model")
    a = ap.parse_args()
    T, d, h, V = a.T, 4096, 11008, 32000
    dev = "cuda"
    x = torch.randn(T, d, device=dev, dtype=torch.half)
    xh = torch.randn(T, h, device=dev, dtype=torch.half)
    w = {n: torch.randn(N, K, device=dev, dtype=torch.half) * 0.02
         for n, (N, K) in {"q": (d, d), "qkv": (3 * d, d), "gate": (h, d), "gateup": (2 * h, d),
                           "down": (d, h), "head": (V, d)}.items()}
    r = {}
    for n in ("q", "qkv", "gate", "gateup"):
        r["mm_" + n] = bench(lambda: x @ w[n].t())
    r["mm_down"] = bench(lambda: xh @ w["down"].t())
    r["mm_head_f32"] = bench(lambda: (x @ w["head"].t()).float())
    q = torch.randn(1, 32, T, 128, device=dev, dtype=torch.half)
    r["sdpa_causal"] = bench(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True))
    layer_gemm = 4 * r["mm_q"] + 3 * r["mm_gate"] if False else 4 * r["mm_q"] + 2 * r["mm_gate"] + r["mm_down"]
    r["layer_gemms_separate_x32"] = 32 * layer_gemm
    r["layer_gemms_fused_x32"] = 32 * (r["mm_qkv"] + r["mm_q"] + r["mm_gateup"] + r["mm_down"])
    r["attention_x32"] = 32 * r["sdpa_causal"]
    flop = 2 * T * d
    for n, N, K in (("q", d, d), ("qkv", 3 * d, d), ("gate", h, d), ("gateup", 2 * h, d), ("down", d, h)):
        r["tflops_" + n] = 2 * T * N * K / (r["mm_" + n] * 1e-3) / 1e12
    print(json.dumps({"peer": "torch-ops", "T": T, "ms": r, "gpu": torch.cuda.get_device_name()}), flush=True)
    if a.model:
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float16, attn_implementation="sdpa").to(dev)
        ids = torch.randint(3, V, (1, T), device=dev)
        with torch.no_grad():
            for _ in range(3):
                m(ids).logits.float()
            torch.cuda.synchronize()
            from torch.profiler import profile, ProfilerActivity
            with profile(activities=[ProfilerActivity.CUDA]) as p:
                m(ids).logits.float()
                torch.cuda.synchronize()
        print(p.key_averages().table(sort_by="cuda_time_total", row_limit=15), flush=True)
        del m


if __name__ == "__main__":
    main()
