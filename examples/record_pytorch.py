#!/usr/bin/env python3
"""Record a PyTorch model's activations for `cnnu analyze DIR` while it trains.

The folder format is docs/run-format.md's "Activations from elsewhere": one
`step-N.safetensors` per recorded optimizer step, holding one float32 tensor `[N, ...]` per
named module (its forward output on a fixed probe set, in eval mode), `labels` and `indices`
(int64 `[N]`), and the metadata `step` and `layers` (the modules in forward order, as JSON).

`record()` works for any `torch.nn.Module`; the demo below trains torchvision's resnet18
(conv1 changed to one channel, 10 classes) on the repository's MNIST slice for a few steps:

    python3 examples/record_pytorch.py --out /tmp/acts --steps 0,5,20
    cnnu analyze /tmp/acts
"""

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def record(model, modules, images, labels, indices, step, out_dir, batch=100):
    """Writes OUT_DIR/step-STEP.safetensors: each named module's output on `images`."""
    named = dict(model.named_modules())
    missing = [m for m in modules if m not in named]
    if missing:
        raise SystemExit(f"no module {missing}; modules: {', '.join(n for n in named if n)}")
    outputs = {m: [] for m in modules}
    hooks = [
        named[m].register_forward_hook(
            lambda _mod, _inp, out, m=m: outputs[m].append(out.detach().float().cpu())
        )
        for m in modules
    ]
    was_training = model.training
    model.eval()  # batch norm's running statistics, no dropout: the same function per image
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch):
                model(images[i : i + batch])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    tensors = {m: torch.cat(outputs[m]).contiguous() for m in modules}
    tensors["labels"] = labels.to(torch.int64).contiguous()
    tensors["indices"] = indices.to(torch.int64).contiguous()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"step-{step}.safetensors"
    save_file(tensors, str(path), metadata={"step": str(step), "layers": json.dumps(modules)})
    return path


def read_idx(path):
    """An MNIST idx file (.gz), as a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    repo = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist", type=Path, default=repo / "crates/fixtures/data/mnist")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", default="0,5,20", help="optimizer steps to record at")
    p.add_argument("--modules", default="layer1,layer2,layer3,layer4,avgpool")
    p.add_argument("--probe", type=int, default=600, help="probe images (the first test images)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import torchvision

    torch.manual_seed(a.seed)
    steps = sorted({int(s) for s in a.steps.split(",")})
    modules = a.modules.split(",")

    def images(name):
        x = torch.from_numpy(read_idx(a.mnist / name).copy()).float().div(255.0)
        return ((x - 0.1307) / 0.3081).unsqueeze(1)

    train_x = images("train-images-idx3-ubyte.gz")
    train_y = torch.from_numpy(read_idx(a.mnist / "train-labels-idx1-ubyte.gz").astype(np.int64))
    test_x = images("t10k-images-idx3-ubyte.gz")
    test_y = torch.from_numpy(read_idx(a.mnist / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    probe = torch.arange(min(a.probe, len(test_x)))  # fixed: the same images at every step

    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(a.seed)
    order = torch.randperm(len(train_x), generator=gen)
    step, pos = 0, 0
    model.train()
    while True:
        if step in steps:
            path = record(model, modules, test_x[probe], test_y[probe], probe, step, a.out)
            print(f"step {step}: {path}")
        if step >= steps[-1]:
            break
        if pos + a.batch_size > len(order):
            order, pos = torch.randperm(len(train_x), generator=gen), 0
        idx = order[pos : pos + a.batch_size]
        pos += a.batch_size
        opt.zero_grad()
        loss = loss_fn(model(train_x[idx]), train_y[idx])
        loss.backward()
        opt.step()
        step += 1
    if step:
        print(f"trained {step} steps, last loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
