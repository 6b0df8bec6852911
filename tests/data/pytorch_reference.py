"""Writes pytorch_reference.json: inputs, outputs and gradients computed by PyTorch for the
pieces whose semantics latentscope re-implements (max-pool with tied maxima, ReLU at 0,
Conv2d, ConvTranspose2d with output_padding, Adam with L2 weight decay).

Run: python tests/data/pytorch_reference.py  (needs torch; the JSON is committed, so the
Rust tests do not need Python)."""
import json
import math
import os

import torch

torch.set_default_dtype(torch.float32)


def values(n, seed, scale=1.0):
    return [round(scale * math.sin(i * 0.37 + seed) * math.cos(i * 0.11 + 2 * seed), 4) for i in range(n)]


def tensor(shape, seed, scale=1.0):
    n = math.prod(shape)
    return torch.tensor(values(n, seed, scale), dtype=torch.float32).reshape(shape)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


out = {"torch_version": torch.__version__}

# 1. max-pool over ReLU, on data with blank (tied) windows and exact zeros.
x = torch.tensor(
    [0, 0, 0, 0, 1, 2, 2, 0,
     0, 0, 0, 0, 2, 1, 0, 2,
     3, 3, -1, 0, 0, 0, 5, 5,
     3, 3, 0, -2, 0, 0, 5, 5],
    dtype=torch.float32,
).reshape(1, 1, 4, 8).repeat(1, 2, 1, 1)
x[0, 1] *= -0.5
x.requires_grad_(True)
proj = tensor([1, 2, 2, 4], 7)
y = torch.nn.functional.max_pool2d(torch.relu(x), 2, 2)
(y * proj).sum().backward()
out["maxpool"] = {"x": flat(x), "shape": list(x.shape), "proj": flat(proj), "y": flat(y), "grad_x": flat(x.grad)}

# 2. a small conv autoencoder chain, MSE loss, then two Adam steps with weight decay.
x = tensor([2, 1, 6, 6], 1, 0.5) + 0.5
conv = torch.nn.Conv2d(1, 2, 3, stride=1, padding=1)
deconv = torch.nn.ConvTranspose2d(2, 1, 3, stride=2, padding=1, output_padding=1)
with torch.no_grad():
    conv.weight.copy_(tensor([2, 1, 3, 3], 2, 0.6))
    conv.bias.copy_(tensor([2], 3, 0.2))
    deconv.weight.copy_(tensor([2, 1, 3, 3], 4, 0.6))
    deconv.bias.copy_(tensor([1], 5, 0.2))
params = [conv.weight, conv.bias, deconv.weight, deconv.bias]
init = [flat(p) for p in params]


def forward(inp):
    h = torch.nn.functional.max_pool2d(torch.relu(conv(inp)), 2, 2)
    return torch.sigmoid(deconv(h))


xin = x.clone().requires_grad_(True)
recon = forward(xin)
loss = torch.nn.functional.mse_loss(recon, xin.detach())
loss.backward()
chain = {
    "x": flat(x),
    "params": init,
    "recon": flat(recon),
    "loss": float(loss.detach()),
    "grad_x": flat(xin.grad),
    "grads": [flat(p.grad) for p in params],
}
opt = torch.optim.Adam(params, lr=0.01, weight_decay=0.1)
for p in params:
    p.grad = None
for _ in range(2):
    opt.zero_grad()
    torch.nn.functional.mse_loss(forward(x), x).backward()
    opt.step()
chain["after_two_adam_steps"] = [flat(p) for p in params]
out["chain"] = chain

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pytorch_reference.json")
with open(path, "w") as f:
    json.dump(out, f)
    f.write("\n")
print("wrote", path)
