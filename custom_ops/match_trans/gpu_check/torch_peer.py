"""MatchTrans in PyTorch, the peer that `make gpu-check` times next to the CUDA kernels.

The same semantics as the op for finite inputs (paper Sec. 3.3 as the authors
implemented it): ReLU'd cosines (each norm + 1e-8), raised to the affinity power
(1: the authors'), over the in-bounds (2k+1)^2 window, normalised by their sum, the
memory kept where the sum is below 1e-7; coefficients carry no gradient.
Two formulations, both NHWC in and out ([B, H, W, C] features, [B, H, W, D] memory):

- `shifted`: one elementwise product and channel sum per offset of the window;
- `unfold`: `F.unfold` of the neighbours and one einsum for the dots, and again for
  the weighted sum.

PyTorch is imported lazily: this file is importable without it.
"""


def _torch():
    import torch
    import torch.nn.functional as F

    return torch, F


def _normalised(torch, x):
    return x / (torch.linalg.vector_norm(x, dim=-1, keepdim=True) + 1e-8)


def _finish(torch, a, k):
    """Normalises affinities `[..., (2k+1)^2]` (0 out of bounds) with the fallback."""
    side = 2 * k + 1
    mass = a.sum(-1, keepdim=True)
    keep = mass >= 1e-7
    identity = torch.zeros(side * side, dtype=a.dtype, device=a.device)
    identity[k * side + k] = 1
    return torch.where(keep, a / torch.where(keep, mass, torch.ones_like(mass)), identity)


def _sharpen(a, power):
    return a if power == 1.0 else a ** power


def coefficients_shifted(f, fp, k, power=1.0):
    """`[B, H, W, (2k+1)^2]`, offset (dy, dx) at (dy+k)*(2k+1) + (dx+k)."""
    torch, F = _torch()
    b, h, w, _ = f.shape
    side = 2 * k + 1
    fn, fpn = _normalised(torch, f), _normalised(torch, fp)
    padded = F.pad(fpn, (0, 0, k, k, k, k))  # pads W then H of NHWC
    inside = F.pad(torch.ones(b, h, w, 1, dtype=f.dtype, device=f.device), (0, 0, k, k, k, k))
    a = torch.stack([(fn * padded[:, dy : dy + h, dx : dx + w]).sum(-1)
                     for dy in range(side) for dx in range(side)], -1)
    mask = torch.stack([inside[:, dy : dy + h, dx : dx + w, 0]
                        for dy in range(side) for dx in range(side)], -1)
    return _finish(torch, _sharpen(a.clamp_min(0), power) * mask, k)


def align_shifted(coef, m, k):
    torch, F = _torch()
    _, h, w, _ = m.shape
    side = 2 * k + 1
    padded = F.pad(m, (0, 0, k, k, k, k))
    out = torch.zeros_like(m)
    for dy in range(side):
        for dx in range(side):
            o = dy * side + dx
            out = out + coef[..., o : o + 1] * padded[:, dy : dy + h, dx : dx + w]
    return out


def match_trans_shifted(f, fp, m, k, power=1.0):
    torch, _ = _torch()
    with torch.no_grad():  # no gradient to the features, as the authors
        coef = coefficients_shifted(f, fp, k, power)
    return align_shifted(coef, m, k)


def coefficients_unfold(f, fp, k, power=1.0):
    torch, F = _torch()
    b, h, w, c = f.shape
    side = 2 * k + 1
    fn = _normalised(torch, f).permute(0, 3, 1, 2).reshape(b, c, h * w)
    fpn = _normalised(torch, fp).permute(0, 3, 1, 2)
    cols = F.unfold(fpn, side, padding=k).view(b, c, side * side, h * w)  # zero padded
    a = torch.einsum("bcp,bcop->bop", fn, cols)  # [B, K2, HW]
    inside = F.unfold(torch.ones(1, 1, h, w, dtype=f.dtype, device=f.device), side, padding=k)
    a = (_sharpen(a.clamp_min(0), power) * inside).permute(0, 2, 1).reshape(b, h, w, side * side)
    return _finish(torch, a, k)


def align_unfold(coef, m, k):
    torch, F = _torch()
    b, h, w, d = m.shape
    side = 2 * k + 1
    cols = F.unfold(m.permute(0, 3, 1, 2), side, padding=k).view(b, d, side * side, h * w)
    c = coef.reshape(b, h * w, side * side).permute(0, 2, 1)  # [B, K2, HW]
    out = torch.einsum("bop,bdop->bdp", c, cols)  # [B, D, HW]
    return out.reshape(b, d, h, w).permute(0, 2, 3, 1)


def match_trans_unfold(f, fp, m, k, power=1.0):
    torch, _ = _torch()
    with torch.no_grad():
        coef = coefficients_unfold(f, fp, k, power)
    return align_unfold(coef, m, k)


FORMULATIONS = {"shifted": match_trans_shifted, "unfold": match_trans_unfold}


def median_ms(torch, fn, repeats):
    """Median milliseconds of `fn()` over `repeats` calls (3 untimed), CUDA events."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return sorted(times)[len(times) // 2]


def time_formulation(fn, f, fp, m, upstream, k, repeats):
    """(forward ms, forward + backward ms) of `fn` for the memory gradient."""
    torch, _ = _torch()
    mg = m.detach().clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            return fn(f, fp, m, k)

    def forward_backward():
        out = fn(f, fp, mg, k)
        return torch.autograd.grad(out, mg, upstream)[0]

    return median_ms(torch, forward, repeats), median_ms(torch, forward_backward, repeats)
