"""Which known data sets fit a model, and whether each is on this machine: the hint a person
gets when the data set they named does not fit (`check_fits`).

Only data sets whose image size is fixed are listed; `shapes:HxWxC` (synthetic) fits any model
and is offered when none of them does.
"""

from __future__ import annotations

from math import prod

# name -> ((H, W, C), classes)
KNOWN = {
    "digits": ((8, 8, 1), 10),
    "fashion-mnist": ((28, 28, 1), 10),
    "mnist": ((28, 28, 1), 10),
}


def availability(name: str) -> str:
    """`built in`, `installed`, or `downloaded on first use`."""
    if name == "digits":
        return "built in"
    from cnnc.data.idx import find_files, search_folders

    for folder, _ in search_folders(name):
        if folder.is_dir() and find_files(folder)[0] is not None:
            return "installed"
    return "downloaded on first use"


def fitting(input_shape: tuple, num_classes: int | None) -> list[tuple[str, str]]:
    """(name, availability) of the known data sets a model with this input (H, W, C) or flat
    (N,) input and this many outputs trains on; installed ones first."""
    shape = tuple(int(d) for d in input_shape)
    found = []
    for name, (image, classes) in KNOWN.items():
        fits = shape == image or (len(shape) == 1 and shape[0] == prod(image))
        if num_classes is not None and num_classes != classes:
            fits = fits and num_classes == 1 and classes == 2
        if fits:
            found.append((name, availability(name)))
    order = {"built in": 0, "installed": 1, "downloaded on first use": 2}
    return sorted(found, key=lambda f: order[f[1]])


def hint(input_shape: tuple, num_classes: int | None) -> str | None:
    """`the data sets with 28x28x1 images are fashion-mnist (installed) and mnist (...)`, with
    how to use the first; None when no known data set fits."""
    found = fitting(input_shape, num_classes)
    if not found:
        return None
    shape = "x".join(str(int(d)) for d in input_shape)
    what = f"{shape} images" if len(input_shape) == 3 else f"{shape} values per image"
    listed = [f"`{name}` ({where})" for name, where in found]
    names = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
    verb = "is" if len(found) == 1 else "are"
    first = found[0][0]
    return (f"the data set{'s' * (len(found) > 1)} with {what} {verb} {names}: train with "
            f"`--data {first}`, or write `data {first}` in the model's `train:` section")
