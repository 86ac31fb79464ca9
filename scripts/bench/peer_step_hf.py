#!/usr/bin/env python3
"""The GPU peer of qkd-train's training step, as a user would write it with transformers.

Used only for the GPU comparison in docs/PERFORMANCE.md (scripts/gpu/device_check.sh runs it beside
qkd-train on the same checkpoint, batch and token file). The recipe of the issue that asked for it:
the teacher in fp16, the student a bf16 copy with SDPA attention, per-channel symmetric int4
straight-through fake-quant of the seven projections recomputed every forward (a parametrization),
fp32 log-softmax forward KL over the full vocabulary, torch.optim.AdamW(fused=True) on every student
parameter (as qkd-train's optim.train_embeddings true), optional activation checkpointing and ov-freeze.

  python3 scripts/bench/peer_step_hf.py --model DIR --tokens assets/data/kjv/kjv-train.u16 \
      --micro-batch 2 --seq-len 2048 --steps 8 [--checkpointing] [--ov-freeze]
Prints one JSON line per step ({"step", "step_seconds", "tokens_per_s", "peak_mem_mb"}) and a summary line.
"""
import argparse, json, time

import numpy as np
import torch
import torch.nn.utils.parametrize as parametrize
from transformers import LlamaForCausalLM

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class FakeQuantInt4(torch.nn.Module):
    """Per-output-channel symmetric int4, straight-through: the forward sees the grid, the gradient passes."""

    def forward(self, w):
        scale = (w.detach().abs().amax(dim=1, keepdim=True) / 7).clamp_min(1e-8)
        q = torch.clamp(torch.round(w / scale), -8, 7) * scale
        return w + (q - w).detach()


def load(model_dir, dtype):
    return LlamaForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").cuda()


def build_student(model_dir, checkpointing, ov_freeze):
    student = load(model_dir, torch.bfloat16)
    student.config.use_cache = False
    for name, module in student.named_modules():
        if name.split(".")[-1] in PROJECTIONS:
            parametrize.register_parametrization(module, "weight", FakeQuantInt4())
            if ov_freeze and name.split(".")[-1] in ("o_proj", "v_proj"):
                module.parametrizations.weight.original.requires_grad_(False)
    if checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    student.train()
    return student


def batches(tokens_path, micro_batch, seq_len, seed=0):
    tokens = np.memmap(tokens_path, dtype=np.uint16, mode="r")
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(tokens) - seq_len - 1, size=micro_batch)
        yield torch.from_numpy(np.stack([tokens[s:s + seq_len].astype(np.int64) for s in starts])).cuda()


def kd_loss(teacher_logits, student_logits):
    t = torch.log_softmax(teacher_logits.float(), dim=-1)
    s = torch.log_softmax(student_logits.float(), dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the summary")
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--ov-freeze", action="store_true")
    p.add_argument("--lr", type=float, default=1e-6)
    a = p.parse_args()

    teacher = load(a.model, torch.float16).eval().requires_grad_(False)
    student = build_student(a.model, a.checkpointing, a.ov_freeze)
    params = [q for q in student.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0, fused=True)
    data = batches(a.tokens, a.micro_batch, a.seq_len)
    torch.cuda.reset_peak_memory_stats()
    rates = []
    for step in range(1, a.steps + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(a.grad_accum):
            ids = next(data)
            with torch.no_grad():
                t_logits = teacher(ids).logits
            with torch.autocast("cuda", dtype=torch.bfloat16):
                s_logits = student(ids).logits
            loss = kd_loss(t_logits, s_logits) / a.grad_accum
            del t_logits, s_logits
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        tokens = a.micro_batch * a.grad_accum * a.seq_len
        record = {"step": step, "step_seconds": seconds, "tokens_per_s": tokens / seconds,
                  "loss": loss.item() * a.grad_accum, "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20}
        print(json.dumps(record), flush=True)
        if step > a.warmup:
            rates.append(record["tokens_per_s"])
    rates.sort()
    print(json.dumps({"summary": True, "median_tokens_per_s": rates[len(rates) // 2] if rates else None,
                      "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20,
                      "trainable_params": sum(q.numel() for q in params)}), flush=True)


if __name__ == "__main__":
    main()
