"""The notebook's training step in PyTorch, timed like `latentscope bench train`: synthetic
images (80% zero pixels), batch 32 (or --batch), Adam, MSE, warm-up then timed steps; prints
ms/step per model. Run beside `cargo xtask bench train --batch 32` on the same machine to get the
ratio (needs torch: `pip install torch`; not part of the tests).
"""
import argparse
import time

import torch
from torch import nn


class SimpleAutoencoder(nn.Module):
    def __init__(self):
        super().__init__()
        dims = [784, 128, 64, 36, 18, 9]
        enc, dec = [], []
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            enc += [nn.Linear(a, b)] + ([nn.ReLU()] if i + 2 < len(dims) else [])
        back = dims[::-1]
        for i, (a, b) in enumerate(zip(back, back[1:])):
            dec += [nn.Linear(a, b)] + ([nn.ReLU()] if i + 2 < len(back) else [nn.Sigmoid()])
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def forward(self, x):
        return self.decoder(self.encoder(x))


class ConvAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(196, 64), nn.ReLU(), nn.Linear(64, 10))
        self.decoder = nn.Sequential(
            nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 196), nn.Unflatten(1, (4, 7, 7)),
            nn.ConvTranspose2d(4, 8, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(8, 1, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid())

    def forward(self, x):
        return self.decoder(self.encoder(x.view(-1, 1, 28, 28))).view(-1, 784)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    # latentscope flushes subnormals while training (and in `bench train`); so does PyTorch
    # here, so that neither pays for Adam's moments decaying into the subnormal range.
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    n = 1024
    data = torch.where(torch.rand(n, 784) < 0.8, torch.zeros(n, 784), torch.randint(0, 256, (n, 784)).float()) / 255.0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}")
    for name, model in [("simple", SimpleAutoencoder()), ("conv", ConvAE())]:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def run(count):
            t = time.perf_counter()
            for step in range(count):
                start = (step * a.batch) % n
                x = data[torch.arange(start, start + a.batch) % n]
                loss = nn.functional.mse_loss(model(x), x)
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss.item()
            return time.perf_counter() - t

        run(5)
        secs = run(a.steps)
        print(f"{name:<7} {1e3 * secs / a.steps:.3f} ms/step")


if __name__ == "__main__":
    main()
