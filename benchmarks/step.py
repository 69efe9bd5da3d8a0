"""A CPU training step of the SWRR head before and after issue 22's cuts, in one run.

    python benchmarks/step.py                 # the demo head (batch 8, LSTM 64, 64-d) and the paper head
    python benchmarks/step.py --quick         # the demo head only

The cuts, each replaced by its former code here (the reference), on the same weights and batch:
  lstm        the aligned BiLSTM: each direction one LSTM call on the B rows (was one bidirectional
              call on 2B rows, half of whose outputs were thrown away);
  hrs-conv    HRS's local branch: its (1, k) kernel as k shifted multiply-adds (was a 1-channel
              Conv2d, which oneDNN runs slowly on a CPU).
Per configuration: median CPU seconds per training step (forward, backward, Adam; alternating
the variants, one thread, so other jobs on the machine inflate both alike) and wall ms; the
largest difference of the forward outputs and of the gradients, relative to each tensor's
largest value (the cuts change float32 summation order, not the computation). Prints readable
lines, then one JSON line.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F

from swrr.model import HRS, SWRR, SharedLSTM, SWRRConfig, heaviside, lengths_to_mask, shift_rows


class TwoBatchLSTM(SharedLSTM):
    """The aligned BiLSTM before issue 22: one bidirectional call on 2B rows."""

    def run(self, x, lengths):
        b, size, hidden = x.shape[0], x.shape[1], self.lstm.hidden_size
        shift = (size - lengths)[:, None]
        steps = torch.arange(size)[None, :]
        right = shift_rows(x, steps - shift) * (steps >= shift)[..., None].to(x.dtype)
        out, _ = self.lstm(torch.cat([x, right]))
        backward = shift_rows(out[b:, :, hidden:], steps + shift)
        valid = lengths_to_mask(lengths, size)[..., None].to(out.dtype)
        return torch.cat([out[:b, :, :hidden], backward], dim=-1) * valid


class ConvHRS(HRS):
    """HRS before issue 22: the local branch through its Conv2d (mode "both", as the default)."""

    def scores(self, z):
        b, c, h, w = z.shape
        h_kept, w_kept = self.screened_size(h, w)
        alpha = torch.sigmoid(self.w2(F.leaky_relu(self.w1(z.mean(dim=(2, 3)))))).float()
        filtered = self.local(z.reshape(b * c, 1, h, w))
        filtered = F.adaptive_avg_pool2d(filtered, (h_kept, w_kept)).reshape(b, c, h_kept, w_kept).float()
        blink = heaviside(filtered - filtered.mean(dim=3, keepdim=True), self.temperature)
        frame_score = blink.sum(dim=3)
        beta = heaviside(frame_score - frame_score.mean(dim=2, keepdim=True), self.temperature).sum(dim=2)
        return alpha, beta, h_kept * alpha + beta


def variants(config: SWRRConfig):
    """{"before": model with both former parts, "after": the current model}, same weights."""
    torch.manual_seed(0)
    after = SWRR(config).train()
    before = copy.deepcopy(after)
    before.encoder.__class__ = TwoBatchLSTM
    for hrs in before.hrs:
        hrs.__class__ = ConvHRS
    return {"before": before, "after": after}


def batch(config: SWRRConfig, size: int):
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(size, config.max_frames, config.audio_dim, generator=g)
    text = torch.randn(size, config.max_tokens, config.text_dim, generator=g)
    audio_len = torch.randint(40, config.max_frames + 1, (size,), generator=g)
    text_len = torch.randint(5, config.max_tokens + 1, (size,), generator=g)
    return audio, audio_len, text, text_len, torch.randint(0, config.num_outputs, (size,), generator=g)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))


def compare(models, inputs) -> dict:
    """Forward outputs and gradients of one step (dropout off) of both variants."""
    results = {}
    for name, model in models.items():
        model.eval()  # no dropout: the two runs draw nothing at random
        logits = model(*inputs[:4])
        grads = torch.autograd.grad(F.cross_entropy(logits, inputs[4]), list(model.parameters()))
        results[name] = logits.detach(), grads
        model.train()
    (lb, gb), (la, ga) = results["before"], results["after"]
    return {"logits_bit_identical": bool(torch.equal(lb, la)), "logits_rel_diff": relative_difference(lb, la),
            "grad_rel_diff_max": max(relative_difference(b, a) for b, a in zip(gb, ga))}


def measure(label: str, config: SWRRConfig, batch_size: int, steps: int) -> dict:
    models = variants(config)
    inputs = batch(config, batch_size)
    optimizers = {k: torch.optim.Adam(m.parameters(), 1e-3) for k, m in models.items()}
    cpu = {k: [] for k in models}
    wall = {k: [] for k in models}
    for i in range(steps + 1):  # the first step of each is a warm-up
        for name, model in models.items():
            torch.manual_seed(i)  # the same dropout masks for both
            t_cpu, t_wall = time.process_time(), time.perf_counter()
            loss = F.cross_entropy(model(*inputs[:4]), inputs[4])
            optimizers[name].zero_grad()
            loss.backward()
            optimizers[name].step()
            if i:
                cpu[name].append(time.process_time() - t_cpu)
                wall[name].append(time.perf_counter() - t_wall)
    r = {"config": label, "batch": batch_size, "steps": steps,
         **{f"{k}_cpu_ms": 1000 * statistics.median(v) for k, v in cpu.items()},
         **{f"{k}_wall_ms": 1000 * statistics.median(v) for k, v in wall.items()},
         **compare(variants(config), inputs)}
    r["speedup_cpu"] = r["before_cpu_ms"] / r["after_cpu_ms"]
    return r


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant for the demo head")
    parser.add_argument("--quick", action="store_true", help="the demo head only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [measure("demo head (LSTM 64, 64-d)", SWRRConfig(audio_dim=64, text_dim=64, lstm_hidden=64), 8,
                    args.steps)]
    if not args.quick:
        rows.append(measure("paper head (LSTM 384, 768-d)", SWRRConfig(), 32, max(2, args.steps // 10)))
    print("| head | batch | CPU ms/step before | after | speed-up | wall ms before | after | logits | grads |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        same = "bit-identical" if r["logits_bit_identical"] else f"rel {r['logits_rel_diff']:.1e}"
        print(f"| {r['config']} | {r['batch']} | {r['before_cpu_ms']:.1f} | {r['after_cpu_ms']:.1f} | "
              f"{r['speedup_cpu']:.2f}x | {r['before_wall_ms']:.1f} | {r['after_wall_ms']:.1f} | {same} | "
              f"rel {r['grad_rel_diff_max']:.1e} |")
    print(json.dumps({"threads": 1, "rows": rows}))


if __name__ == "__main__":
    main()
