"""The small ResNet the evaluator uses: it scores samples (accuracy, domain FID/KID/IS features) and,
trained on samples alone, measures how well they replace the data (CAS)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ClassifierConfig:
    width: int = 32  # channels of the first stage; stages use width, 2*width, 4*width
    blocks_per_stage: int = 1  # residual blocks in each of the three stages
    epochs: int = 8  # training epochs on the real training split
    batch_size: int = 128
    lr: float = 2e-3  # AdamW learning rate (cosine decay to 0)
    weight_decay: float = 5e-4
    max_shift: int = 2  # random translation augmentation, pixels
    # random horizontal flips: only for data whose mirror image keeps its class (faces, parts; not digits)
    flip: bool = False
    jitter: float = 0.0  # random brightness and contrast change, up to this fraction of the range (0: none)
    # drop each epoch's last, smaller batch (a set of fewer images than a batch is one batch): where sets of
    # different sizes are compared, a tail batch of a few images is a noisy full step that some sizes take
    # every epoch and others not (525 real faces scored 48% against 56% from 350 with a 13-image tail)
    drop_last: bool = False
    seed: int = 0


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.skip(x) + self.bn2(self.conv2(h)))


class ResNetClassifier(nn.Module):
    """Input: images [B, C, H, W] in [-1, 1]. ``features`` gives the penultimate layer [B, 4*width];
    ``forward`` gives logits [B, num_classes]."""

    def __init__(self, in_channels: int, num_classes: int, config: ClassifierConfig):
        super().__init__()
        w = config.width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        layers = []
        cin = w
        for stage, cout in enumerate((w, 2 * w, 4 * w)):
            for i in range(config.blocks_per_stage):
                layers.append(BasicBlock(cin, cout, stride=2 if (stage > 0 and i == 0) else 1))
                cin = cout
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        self.feature_dim = cin
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, feature_dim] (global average pool of the last stage)."""
        return self.body(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> logits [B, num_classes]."""
        return self.fc(self.features(x))


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (edge padding). [B, C, H, W] -> same."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # [B, H]
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # [B, W]
    idx = torch.arange(b, device=x.device)[:, None, None]
    # standard strides: a conv backward on the channels-last strides of this view (with 1 channel, PyTorch
    # counts it as contiguous too) corrupts memory in torch 2.15 on CPU for some batch sizes
    shifted = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return shifted.clone(memory_format=torch.contiguous_format)


def random_flip_jitter(x: torch.Tensor, flip: bool, jitter: float, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2 (``flip``) and scale its contrast by 1 + u and shift its
    brightness by v, u and v uniform in [-jitter, jitter] per image. x: [B, C, H, W] in [-1, 1] -> same,
    clamped to [-1, 1]. Draws nothing from ``generator`` where both are off."""
    b = x.shape[0]
    if flip:
        flipped = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flipped.to(x.device)[:, None, None, None], x.flip(3), x)
    if jitter > 0:
        scale = 1 + (torch.rand(b, generator=generator) * 2 - 1) * jitter
        shift = (torch.rand(b, generator=generator) * 2 - 1) * jitter * 2  # the range [-1, 1] is 2 wide
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * scale.to(x.device)[:, None, None, None] + mean + shift.to(x.device)[:, None, None, None])
        x = x.clamp(-1, 1)
    return x


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, config: ClassifierConfig,
                     device: str = "cpu", log=None) -> ResNetClassifier:
    """Train a fresh classifier. images: [N, C, H, W] uint8; labels: [N] int64. Returns it in eval mode."""
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = ResNetClassifier(images.shape[1], num_classes, config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    used = len(images) - len(images) % config.batch_size if config.drop_last and len(images) >= config.batch_size \
        else len(images)  # images an epoch trains on
    steps_per_epoch = max(1, -(-used // config.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch,
                                                pct_start=0.15)
    model.train()
    for epoch in range(config.epochs):
        perm = torch.randperm(len(images), generator=gen)
        # the epoch's sums stay on the device, read once where they are logged: no host sync a step
        total, correct, loss_sum = 0, torch.zeros((), device=device), torch.zeros((), device=device)
        for start in range(0, used, config.batch_size):
            idx = perm[start:start + config.batch_size]
            x = images[idx].to(device).float() / 127.5 - 1.0
            x = random_flip_jitter(random_shift(x, config.max_shift, gen), config.flip, config.jitter, gen)
            y = labels[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == y).sum()
            total += len(idx)
        if log:
            log(f"classifier epoch {epoch + 1}/{config.epochs}: loss {loss_sum.item() / total:.4f}, "
                f"train accuracy {correct.item() / total:.4f}")
    return model.eval()


@torch.no_grad()
def predict(model: ResNetClassifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities. images: [N, C, H, W] uint8 -> [N, num_classes] float32."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device).float() / 127.5 - 1.0
        out.append(model(x).softmax(1).cpu())
    return torch.cat(out)
