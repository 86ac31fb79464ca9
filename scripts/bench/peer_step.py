#!/usr/bin/env python3
"""The peer of qkd-train's training step, as a user would write it in plain PyTorch (eager).

Used only by scripts/bench/run_bench.py for the speed comparison in docs/PERFORMANCE.md. Same model,
data, shape and threads as the qkd-train run it is compared with: a functional LLaMA forward with
explicit matmul and softmax attention, per-channel symmetric int4 straight-through fake-quant of the
seven projections recomputed every forward, full-vocabulary log-softmax forward KL (teacher || student),
torch.optim.AdamW(foreach=True), torch.set_flush_denormal(True). Needs PyTorch (Debian: python3-torch,
the same libtorch and OpenBLAS as the C++ build).

  python3 scripts/bench/peer_step.py --model assets/models/kjv-teacher-7m --tokens assets/data/kjv/kjv-train.u16 \
      --micro-batch 4 --grad-accum 1 --seq-len 256 --steps 6 --threads 2
Prints one JSON line per step: {"step", "step_seconds", "tokens_per_s", "phases": {...}} and, with
--matmul-rate, one line with the machine's fp32 matmul rate measured in this process.
"""
import argparse, json, math, struct, time

import torch

DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        dtype = DTYPES[meta["dtype"]]
        count = (end - begin) // torch.tensor([], dtype=dtype).element_size()
        t = torch.frombuffer(data, dtype=dtype, count=count, offset=begin)
        out[name] = t.reshape(meta["shape"]).to(torch.float32).clone()
    return out


def rope_tables(config, seq):
    dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    inv_freq = 1.0 / (config.get("rope_theta", 10000.0) ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = torch.outer(torch.arange(seq, dtype=torch.int64).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def fake_quant(w, bits=4):
    qmax = 2 ** (bits - 1) - 1
    scale = (w.detach().abs().amax(dim=1, keepdim=True) / qmax).clamp_min(1e-8)
    q = torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale
    return w + (q - w).detach()


def forward(params, config, ids, cos, sin, quantize):
    b, t = ids.shape
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    dim = config.get("head_dim") or config["hidden_size"] // heads
    eps = config["rms_norm_eps"]
    mask = torch.full((t, t), float("-inf")).triu(1)
    weight = (lambda name: fake_quant(params[name]) if quantize else params[name])
    h = params["model.embed_tokens.weight"][ids]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms_norm(h, params[p + "input_layernorm.weight"], eps)
        q = (x @ weight(p + "self_attn.q_proj.weight").t()).view(b, t, heads, dim).transpose(1, 2)
        k = (x @ weight(p + "self_attn.k_proj.weight").t()).view(b, t, kv_heads, dim).transpose(1, 2)
        v = (x @ weight(p + "self_attn.v_proj.weight").t()).view(b, t, kv_heads, dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(dim) + mask
        attn = torch.softmax(scores, dim=-1) @ v
        h = h + attn.transpose(1, 2).reshape(b, t, heads * dim) @ weight(p + "self_attn.o_proj.weight").t()
        x = rms_norm(h, params[p + "post_attention_layernorm.weight"], eps)
        gate = torch.nn.functional.silu(x @ weight(p + "mlp.gate_proj.weight").t())
        up = x @ weight(p + "mlp.up_proj.weight").t()
        h = h + (gate * up) @ weight(p + "mlp.down_proj.weight").t()
    h = rms_norm(h, params["model.norm.weight"], eps)
    head = params.get("lm_head.weight", params["model.embed_tokens.weight"])
    return h @ head.t()


def token_windows(path, seq, batch, seed):
    raw = open(path, "rb").read()
    tokens = torch.frombuffer(bytearray(raw), dtype=torch.int16).to(torch.int64) & 0xFFFF
    g = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, tokens.numel() - seq, (batch,), generator=g)
        yield torch.stack([tokens[s : s + seq] for s in starts.tolist()])


def matmul_rate(n=2048, reps=10):
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start)


def attention_product_rates(threads, reps=50):
    """GFLOP/s of one layer's attention products ([32 heads, 256, 32] x [32, 32, 256]) as one batched
    product over the intra-op threads, and of one such head product alone on one thread."""
    q, k = torch.randn(32, 256, 32), torch.randn(32, 32, 256)
    flops = 2 * 32 * 256 * 256 * 32
    torch.set_num_threads(threads)
    for _ in range(3):
        torch.bmm(q, k)
    start = time.perf_counter()
    for _ in range(reps):
        torch.bmm(q, k)
    batched = flops * reps / (time.perf_counter() - start)
    torch.set_num_threads(1)
    start = time.perf_counter()
    for _ in range(reps):
        for h in range(32):
            q[h] @ k[h]
    single = flops * reps / (time.perf_counter() - start)
    torch.set_num_threads(threads)
    return batched, single


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--matmul-rate", action="store_true")
    ap.add_argument("--attention-rates", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    config = json.load(open(f"{args.model}/config.json"))
    teacher = load_safetensors(f"{args.model}/model.safetensors")
    student = {k: v.clone().requires_grad_(True) for k, v in teacher.items()}
    optimizer = torch.optim.AdamW(student.values(), lr=args.lr, weight_decay=0.0, foreach=True)
    cos, sin = rope_tables(config, args.seq_len)
    batches = token_windows(args.tokens, args.seq_len, args.micro_batch, 5)

    for step in range(1, args.steps + 1):
        phases = dict(teacher_forward=0.0, student_forward=0.0, loss=0.0, backward=0.0, optimizer=0.0)
        start = time.perf_counter()
        for _ in range(args.grad_accum):
            ids = next(batches)
            t0 = time.perf_counter()
            with torch.no_grad():
                t_logits = forward(teacher, config, ids, cos, sin, False)
            t1 = time.perf_counter()
            s_logits = forward(student, config, ids, cos, sin, True)
            t2 = time.perf_counter()
            vocab = s_logits.shape[-1]
            loss = torch.nn.functional.kl_div(torch.log_softmax(s_logits.view(-1, vocab), -1),
                                              torch.log_softmax(t_logits.view(-1, vocab), -1),
                                              reduction="batchmean", log_target=True) / args.grad_accum
            t3 = time.perf_counter()
            loss.backward()
            t4 = time.perf_counter()
            phases["teacher_forward"] += t1 - t0
            phases["student_forward"] += t2 - t1
            phases["loss"] += t3 - t2
            phases["backward"] += t4 - t3
        t5 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        phases["optimizer"] += time.perf_counter() - t5
        seconds = time.perf_counter() - start
        tokens = args.micro_batch * args.grad_accum * args.seq_len
        print(json.dumps({"step": step, "step_seconds": seconds, "tokens_per_s": tokens / seconds,
                          "loss": loss.item() * args.grad_accum, "phases": phases}), flush=True)
    if args.matmul_rate:
        print(json.dumps({"matmul_flops_per_s": matmul_rate()}), flush=True)
    if args.attention_rates:
        batched, single = attention_product_rates(args.threads)
        print(json.dumps({"attention_batched_flops_per_s": batched, "attention_one_thread_flops_per_s": single}),
              flush=True)


if __name__ == "__main__":
    main()
