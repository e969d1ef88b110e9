"""PyTorch eager on the same network and batches as `cargo bench --bench training`, for the
side-by-side figures in the README (not run by CI; needs `pip install torch torchvision`).

    python3 benches/pytorch_reference.py            # 2 threads, as cnnu on this machine

Prints training img/s at batch 64 (Adam, lr 1e-3, train mode) and inference img/s at batch 64
and 256 (eval mode, logits only), each the median of several timed repetitions after warm-up.
Inputs are random: the speed of a dense CPU network does not depend on the pixel values.
"""

import argparse
import statistics
import time

import torch
import torchvision


def mnist_resnet18():
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def median_seconds(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = mnist_resnet18()
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(64, 1, 28, 28)
    y = torch.randint(0, 10, (64,))

    def step():
        optim.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optim.step()

    model.train()
    t = median_seconds(step, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"training step, batch 64 (Adam): {t * 1e3:.1f} ms, {64 / t:.0f} img/s")
    model.eval()
    for n in (64, 256):
        xb = torch.randn(n, 1, 28, 28)
        with torch.no_grad():
            t = median_seconds(lambda: model(xb), args.repeats)
        print(f"inference, batch {n}, logits only: {t * 1e3:.1f} ms, {n / t:.0f} img/s")


if __name__ == "__main__":
    main()
