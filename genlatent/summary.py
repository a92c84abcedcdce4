"""Layer-by-layer network summaries: output shapes and parameter counts."""

from __future__ import annotations

import torch
from torch import nn


def layer_table(
    module: nn.Module, example: torch.Tensor
) -> list[tuple[str, str, tuple[int, ...], int]]:
    """Run ``example`` through ``module`` and list every leaf layer.

    Returns:
        ``(name, layer type, output shape, parameter count)`` per leaf layer in
        call order; output shapes include the batch axis.
    """
    rows: list[tuple[str, str, tuple[int, ...], int]] = []
    names = {layer: name for name, layer in module.named_modules()}
    handles = []

    def record(layer: nn.Module, inputs: object, output: object) -> None:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
        count = sum(p.numel() for p in layer.parameters(recurse=False))
        rows.append((names[layer], type(layer).__name__, shape, count))

    for layer in module.modules():
        if not list(layer.children()):
            handles.append(layer.register_forward_hook(record))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(example)
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return rows


def format_table(title: str, rows: list[tuple[str, str, tuple[int, ...], int]]) -> str:
    """Render :func:`layer_table` rows as aligned text with a total."""
    lines = [title]
    header = ("layer", "type", "output shape", "parameters")
    cells = [header] + [
        (name or "-", kind, "x".join(map(str, shape[1:])) or "-", f"{count:,}")
        for name, kind, shape, count in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    for row in cells:
        lines.append(
            "  "
            + "  ".join(
                cell.rjust(width) if i == 3 else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
    total = sum(count for *_, count in rows)
    lines.append(f"  total parameters: {total:,}")
    return "\n".join(lines)
