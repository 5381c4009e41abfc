"""A class-conditional UNet that maps (x_t, t, y) to a tensor of the same spatial size.

The network knows nothing about noise schedules: it sees an image, a timestep (an
integer or float per sample, used only through a sinusoidal embedding) and a class
label. Label ``num_classes`` is the null class used for classifier-free guidance.
Optionally (``latent_dim`` > 0) it also takes a latent vector z, as the generator of a
denoising diffusion GAN (models/ddgan.py) does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from condgen_bench.models.accel import plain_attention


@dataclass
class UNetConfig:
    base_channels: int = 64  # feature channels at full resolution
    channel_mult: tuple[int, ...] = (1, 2, 2)  # channels = base * mult at each resolution level
    num_res_blocks: int = 2  # residual blocks per level on the way down (one more on the way up)
    attention_resolutions: tuple[int, ...] = (8,)  # feature-map sizes (px) that get self-attention
    num_heads: int = 4  # attention heads where attention is used
    dropout: float = 0.0  # dropout inside residual blocks


def tiny_unet_config(attention_resolutions: tuple[int, ...] = (4,)) -> UNetConfig:
    """A UNet of a few thousand weights (8 and 16 channels, one block a level), for the families' tiny configs:
    the tests build every family from its registered tiny config (models/__init__.py, MethodEntry.tiny)."""
    return UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=attention_resolutions, num_heads=2)


def _groups(channels: int) -> int:
    """Largest group count <= 32 that divides ``channels`` (GroupNorm needs a divisor)."""
    for g in range(min(32, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps.

    t: [B] (int or float). Returns [B, dim].
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


# A 3x3 convolution (padding 1) over a nearest 2x upsampling, as a stride-2 transposed convolution of the
# input: output row 2i sees input rows i-1 and i with taps (w0 | w1 + w2), row 2i+1 sees rows i and i+1 with
# (w0 + w1 | w2) (the upsampling repeats each row twice, so taps on the same input row add up). The
# transposed convolution's 4-tap kernel (w2, w1 + w2, w0 + w1, w0) places exactly these. [4 taps, 3 taps]
_UPSAMPLE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def upsample_conv(x: torch.Tensor, conv: nn.Conv2d, size: tuple[int, int], taps: torch.Tensor) -> torch.Tensor:
    """conv(nearest upsampling of x to ``size``) for a 3x3 convolution with padding 1.
    x: [B, C, H, W] -> [B, conv.out_channels, *size]; taps: _UPSAMPLE_TAPS as a [4, 3] tensor on x's device
    (a buffer of the network, so that no forward pass copies it from the host).

    At exactly twice the size this is one transposed convolution (see _UPSAMPLE_TAPS): the same sums in
    16/36 of the multiply-adds, rounding aside; other sizes (e.g. 7 -> 13) upsample first."""
    h, w = x.shape[-2:]
    if tuple(size) != (2 * h, 2 * w):
        return conv(F.interpolate(x, size=size, mode="nearest"))
    taps = taps.to(conv.weight.dtype)  # [4, 3]
    kernel = torch.einsum("yk,xl,oikl->ioyx", taps, taps, conv.weight)  # [C, O, 4, 4], transposed-conv layout
    return F.conv_transpose2d(x, kernel, conv.bias, stride=2, padding=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the embedding applied as a scale and shift."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: [B, in_ch, H, W], emb: [B, emb_dim] -> [B, out_ch, H, W]."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v. q, k, v: [B, heads, L, d] -> [B, heads, L, d].

    PyTorch's fused kernel everywhere but on the CPU at up to 256 tokens, where the three plain ops are
    1.3-2x faster than both CPU paths of scaled_dot_product_attention (its flash kernel, and its math path
    with a NaN-safe softmax) at this UNet's sizes (36 and 144 tokens; measured with torch 2.14, 2 threads):
    models/accel.py's plain_attention decides."""
    if plain_attention(q.device, q.shape[-2]):
        return torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2), dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads if channels % num_heads == 0 else 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
        # [B, heads, HW, C/heads] views for attention; the result back as [B, heads, C/heads, HW]
        out = attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)).transpose(-1, -2)
        return x + self.proj(out.reshape(b, c, h, w))


class UNet(nn.Module):
    """Class-conditional UNet.

    Args:
        in_channels: image channels (1 or 3), from the dataset.
        out_channels: channels of the output (in_channels for epsilon prediction).
        num_classes: number of real classes; label ``num_classes`` means "no label".
        image_size: the input's height and width (only used to place attention).
        config: widths and depths.
        latent_dim: size of an optional latent input z (0: none). When > 0, an MLP of z is added to the
            timestep and class embedding, which sets every residual block's scale and shift: the same
            idea as Xiao et al.'s adaptive normalization by z, through the embedding already there.
    """

    def __init__(self, in_channels: int, out_channels: int, num_classes: int, image_size: int, config: UNetConfig,
                 latent_dim: int = 0):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        base = config.base_channels
        emb_dim = 4 * base
        self.base_channels = base
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim)  # last row: the null class
        # z [B, latent_dim] -> [B, emb_dim], added to the embedding (no module, no parameters without a latent)
        self.latent_mlp = (nn.Sequential(nn.Linear(latent_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                           if latent_dim > 0 else None)
        self.stem = nn.Conv2d(in_channels, base, 3, padding=1)

        def make_block(cin: int, cout: int, size: int) -> nn.ModuleList:
            block = nn.ModuleList([ResBlock(cin, cout, emb_dim, config.dropout)])
            if size in config.attention_resolutions:
                block.append(AttentionBlock(cout, config.num_heads))
            return block

        # Encoder: at each level num_res_blocks blocks, then a strided conv (except the last level).
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_channels = [base]
        sizes = [image_size]  # feature-map size at each level
        ch, size = base, image_size
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                self.down.append(make_block(ch, base * mult, size))
                ch = base * mult
                skip_channels.append(ch)
            if level < len(config.channel_mult) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)
                size = (size + 1) // 2
                sizes.append(size)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, config.dropout), AttentionBlock(ch, config.num_heads),
                                  ResBlock(ch, ch, emb_dim, config.dropout)])
        # Decoder: num_res_blocks + 1 blocks a level, each taking one skip connection.
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for _ in range(config.num_res_blocks + 1):
                self.up.append(make_block(ch + skip_channels.pop(), base * mult, sizes[level]))
                ch = base * mult
            if level > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.levels = len(config.channel_mult)
        self.blocks_per_level = config.num_res_blocks
        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.out = nn.Conv2d(ch, out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # the upsampling convolutions' taps, moved with the network (not saved: a constant)
        self.register_buffer("upsample_taps", torch.tensor(_UPSAMPLE_TAPS), persistent=False)

    @staticmethod
    def _run(block: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = block[0](h, emb)
        for layer in block[1:]:
            h = layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, C, H, W] float, t: [B] timesteps, y: [B] int64 labels in [0, num_classes], z: [B, latent_dim]
        (required when latent_dim > 0, else None) -> [B, out_channels, H, W]."""
        if (z is None) != (self.latent_mlp is None):
            raise ValueError(f"this UNet has latent_dim={self.latent_dim}: "
                             + ("z is required" if z is None else "it takes no z"))
        emb = self.time_mlp(timestep_embedding(t, self.base_channels)) + self.class_emb(y)
        if z is not None:
            emb = emb + self.latent_mlp(z)
        h = self.stem(x)
        skips = [h]
        blocks = iter(self.down)
        for level in range(self.levels):
            for _ in range(self.blocks_per_level):
                h = self._run(next(blocks), h, emb)
                skips.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)
                skips.append(h)
        h = self.mid[0](h, emb)
        h = self.mid[1](h)
        h = self.mid[2](h, emb)
        blocks = iter(self.up)
        for level in range(self.levels):
            for _ in range(self.blocks_per_level + 1):
                skip = skips.pop()
                h = self._run(next(blocks), torch.cat([h, skip], dim=1), emb)
            if level < self.levels - 1:
                # Upsample to the size of the next skip (sizes need not be powers of two: 28 -> 14 -> 7).
                h = upsample_conv(h, self.upsample[level], skips[-1].shape[-2:], self.upsample_taps)
        return self.out(F.silu(self.out_norm(h)))
