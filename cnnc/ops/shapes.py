"""Shape arithmetic shared by every windowed op (conv, pool), in small named helpers.

Sizes are per spatial axis. `pads` are (before, after). The general rule is

    out = floor((m + before + after - d*(k - 1) - 1) / s) + 1

which for stride 1, dilation 1 and no padding is the familiar m - n + 1.
"""

from __future__ import annotations


def effective_kernel(kernel: int, dilation: int = 1) -> int:
    """The extent a dilated kernel covers.

    >>> effective_kernel(3, 2)
    5
    """
    return dilation * (kernel - 1) + 1


def window_out(size: int, kernel: int, stride: int = 1, pads: tuple[int, int] = (0, 0),
               dilation: int = 1, ceil: bool = False) -> int:
    """Output length of a sliding window (conv or pool) along one axis; 0 when none fits.

    With ceil rounding the last window may run past the end, as in Caffe and PyTorch's
    ceil_mode, but it must start inside the input or its leading padding (PyTorch's rule).

    >>> window_out(28, 3)                     # m - n + 1
    26
    >>> window_out(28, 3, pads=(1, 1))        # 'same' for stride 1
    28
    >>> window_out(7, 3, stride=2, dilation=2)
    2
    >>> window_out(112, 3, stride=2), window_out(112, 3, stride=2, ceil=True)
    (55, 56)
    >>> window_out(5, 2, stride=2, pads=(1, 1), ceil=True)   # a 4th would start in the padding
    3
    >>> window_out(2, 3), window_out(2, 3, stride=3, ceil=True)  # ceil: the window may overhang
    (0, 1)
    """
    span = size + pads[0] + pads[1] - effective_kernel(kernel, dilation)
    if ceil:
        out = -(-span // stride) + 1
        if out > 0 and (out - 1) * stride >= size + pads[0]:
            out -= 1
    else:
        out = span // stride + 1
    return max(out, 0)


def same_pads(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding: output ceil(m / s); odd padding puts the extra pixel after.

    >>> same_pads(28, 3)
    (1, 1)
    >>> same_pads(224, 7, stride=2)
    (2, 3)
    >>> same_pads(5, 2, stride=2)
    (0, 1)
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + effective_kernel(kernel, dilation) - size, 0)
    return total // 2, total - total // 2


def resolve_pads(pad, size_hw: tuple[int, int], kernel: tuple[int, int],
                 stride: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """A pad attribute ('valid', 'same' or (top, bottom, left, right)) as explicit pads.

    >>> resolve_pads("same", (224, 224), (7, 7), (2, 2), (1, 1))
    (2, 3, 2, 3)
    >>> resolve_pads("valid", (5, 5), (3, 3), (1, 1), (1, 1))
    (0, 0, 0, 0)
    """
    if pad == "valid":
        return (0, 0, 0, 0)
    if pad == "same":
        top, bottom = same_pads(size_hw[0], kernel[0], stride[0], dilation[0])
        left, right = same_pads(size_hw[1], kernel[1], stride[1], dilation[1])
        return (top, bottom, left, right)
    return tuple(pad)


def avg_pool_counts(size: int, out: int, kernel: int, stride: int, pads: tuple[int, int],
                    count_pad: bool) -> tuple[int, ...]:
    """How many elements each window of an average pool divides by, along one axis.

    count_pad=False: the window's elements inside the real input. count_pad=True: those inside
    the padded input (padding counts; a ceil-mode overhang past the padding does not), PyTorch's
    count_include_pad=True. A window's divisor is the product of its row and column counts.

    >>> avg_pool_counts(5, 3, 2, 2, (1, 1), False), avg_pool_counts(5, 3, 2, 2, (1, 1), True)
    ((1, 2, 2), (2, 2, 2))
    >>> avg_pool_counts(4, 2, 3, 2, (0, 0), False)   # ceil mode: the last window overhangs
    (3, 2)
    """
    before, after = pads
    lo, hi = (-before, size + after) if count_pad else (0, size)
    return tuple(min(i * stride - before + kernel, hi) - max(i * stride - before, lo)
                 for i in range(out))


def fmt_shape(shape) -> str:
    """H x W x C, or N once flat.

    >>> fmt_shape((28, 28, 1)), fmt_shape((10,))
    ('28x28x1', '10')
    """
    return "x".join(str(s) for s in shape)
