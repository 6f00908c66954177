"""Weights files as people hold them: read them safely, find the tensors, match them to a backbone.

Accepted forms of a ``--model.pretrained_path`` file (and of the state dicts of
torchvision's weights API):

* a plain state dict (``torch.save(model.state_dict(), F)``), torchvision's names
  (``conv1.weight``, ``features.0.weight``, ``Mixed_5b...``) or this package's
  backbone names (``stem.0.weight``, ``conv1_3.0.weight``, ...);
* the same nested under ``"state_dict"``, ``"model"`` or ``"model_state_dict"``
  (wsolevaluation's and most training scripts' checkpoints);
* keys under a common prefix: ``module.`` (saved from DataParallel/DDP), the
  backbone's own attribute name (``backbone.``, ``encoder.``...), any mix of these;
* this package's Lightning checkpoints (``fit.py``'s ``*.ckpt``): the backbone
  tensors are those under ``method.backbone.``.

The prefix is not guessed from a list: of all the prefixes the file's keys have
(at ``.`` boundaries), the one under which most keys name a tensor of the
backbone wins. A tensor loads when its name and shape match; the report line
says how many loaded, which backbone tensors keep their random initialization
(new layers such as VGG's ``conv6``, or tensors the file lacks) and which of the
file's tensors were not used (a classifier ``fc``). A file that provides fewer
than :data:`MIN_MATCHED_FRACTION` of the backbone's pretrained tensors is refused
with what it looks like (``a vgg16 state dict``), so a silent partial load cannot
happen.

Files are read with ``torch.load(weights_only=True)``: a file cannot run code.
Every problem (missing, empty, not a torch file, truncated, needing unsafe
unpickling, no tensors, another architecture) is a one-line
:class:`~wsol_lightning.errors.WSOLInputError` naming the file.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

from wsol_lightning.errors import WSOLInputError

#: Share of a backbone's pretrained tensors a file must provide (by name and shape) to be loaded.
MIN_MATCHED_FRACTION = 0.9

#: Keys under which checkpoints nest their state dict, tried in this order.
NESTING_KEYS = ("state_dict", "model", "model_state_dict")

#: BatchNorm step counters: loaded when present, never counted (old model-zoo files lack them).
_COUNTER_SUFFIX = "num_batches_tracked"


# ------------------------------------------------------------------------------------------------ reading
def read_torch_file(path: str, what: str = "weights file") -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, every failure as one line naming ``path``.

    Args:
        path: the file.
        what: how the error names the file (``"weights file"``, ``"checkpoint"``).

    Returns:
        The loaded object (zip-format files are memory-mapped: tensors are read when used).
    """
    if not os.path.exists(path):
        raise WSOLInputError(f"{path}: {what} not found")
    if os.path.isdir(path):
        raise WSOLInputError(f"{path}: is a directory, not a {what}")
    if os.path.getsize(path) == 0:
        raise WSOLInputError(f"{path}: empty file, not a {what}")
    with open(path, "rb") as handle:
        head = handle.read(64)
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and head.startswith(b"PK"):
        raise WSOLInputError(f"{path}: truncated or corrupt torch file (a zip archive without its directory, "
                             f"as a file cut short leaves it)")
    if not is_zip and not head.startswith(b"\x80"):  # torch's legacy format is a pickle (protocol >= 2)
        raise WSOLInputError(f"{path}: not a torch file ({_looks_like(head)}), expected a {what} saved by torch.save")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found:
            raise WSOLInputError(
                f"{path}: needs unsafe unpickling (it stores the Python object {found.group(1)}, not only tensors); "
                f"files are read with weights_only=True so that they cannot run code: re-save the tensors with "
                f"torch.save(model.state_dict(), path)") from None
        raise WSOLInputError(f"{path}: corrupt torch file ({_first_line(error)})") from None
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError, ValueError ... for damaged files
        raise WSOLInputError(f"{path}: truncated or corrupt torch file ({type(error).__name__}: "
                             f"{_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _looks_like(head: bytes) -> str:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with bytes {head[:8].hex(' ')}"
    return f"it is text starting {text.splitlines()[0][:40]!r}" if text.strip() else "it is blank text"


def find_state_dict(obj: Any, path: str) -> Dict[str, torch.Tensor]:
    """The tensors of the state dict in ``obj``, looking into :data:`NESTING_KEYS` (nested too).

    Returns:
        ``{key: tensor}`` (entries that are not tensors are left out).
    """
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors and 2 * len(tensors) >= len(obj):
            return tensors
        for key in NESTING_KEYS:
            if isinstance(obj.get(key), Mapping):
                return find_state_dict(obj[key], path)
        keys = ", ".join(repr(k) for k in list(obj)[:6])
        raise WSOLInputError(f"{path}: a dict without a state dict (keys {keys}; looked for tensors, then under "
                             f"{', '.join(repr(k) for k in NESTING_KEYS)})")
    raise WSOLInputError(f"{path}: holds a {type(obj).__name__}, not a state dict")


# ----------------------------------------------------------------------------------------------- matching
@dataclass
class WeightsMatch:
    """How a file's tensors map onto a module's state dict.

    Attributes:
        prefix: the key prefix that was stripped (``""``, ``"module."``, ``"method.backbone."``...).
        tensors: ``{own name: tensor}`` to load.
        required: own names the file is expected to provide (the pretrained part).
        unset: own names that keep their initialization (not in the file, or of another shape).
        unused: the file's keys that were not loaded.
        wrong_shape: ``(own name, file shape, own shape)`` of names that match but shapes that do not.
    """

    prefix: str
    tensors: Dict[str, torch.Tensor]
    required: List[str]
    unset: List[str]
    unused: List[str]
    wrong_shape: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)

    @property
    def num_required_loaded(self) -> int:
        """How many of :attr:`required` the file provides."""
        return sum(1 for name in self.required if name in self.tensors)


def _counted(name: str) -> bool:
    return not name.endswith(_COUNTER_SUFFIX)


def _best_prefix(keys: Sequence[str], names: Mapping[str, str]) -> Tuple[str, int]:
    """The ``.``-boundary prefix under which most ``keys`` are in ``names`` (shortest of ties), and that count."""
    scores: Dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        for cut in range(len(parts)):
            prefix = ".".join(parts[:cut]) + ("." if cut else "")
            if key[len(prefix):] in names:
                scores[prefix] = scores.get(prefix, 0) + 1
    if not scores:
        return "", 0
    prefix = max(scores, key=lambda p: (scores[p], -len(p)))
    return prefix, scores[prefix]


def match_state_dict(source: Mapping[str, torch.Tensor], target: Mapping[str, Tuple[int, ...]],
                     aliases: Optional[Mapping[str, str]] = None,
                     required: Optional[Sequence[str]] = None) -> WeightsMatch:
    """Match ``source`` tensors to ``target`` names by name (after the best prefix) and shape.

    Args:
        source: the file's tensors.
        target: own name -> shape of the module to load.
        aliases: other names of own tensors (torchvision's ``conv1.weight`` for ``stem.0.weight``).
        required: own names the file should provide (default: all of ``target``).
    """
    names = {name: name for name in target}
    for alias, own in (aliases or {}).items():
        if own in target:
            names.setdefault(alias, own)
    prefix, _ = _best_prefix(list(source), names)
    tensors: Dict[str, torch.Tensor] = {}
    unused, wrong_shape = [], []
    for key, tensor in source.items():
        own = names.get(key[len(prefix):]) if key.startswith(prefix) else None
        if own is None or own in tensors:
            unused.append(key)
        elif tuple(tensor.shape) != tuple(target[own]):
            wrong_shape.append((own, tuple(tensor.shape), tuple(target[own])))
            unused.append(key)
        else:
            tensors[own] = tensor
    required = [n for n in (target if required is None else required) if _counted(n)]
    unset = [n for n in target if n not in tensors and _counted(n)]
    return WeightsMatch(prefix, tensors, required, unset, [k for k in unused if _counted(k)], wrong_shape)


def _names(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def report_line(match: WeightsMatch, total: int, source: str) -> str:
    """``loaded 265 of 267 backbone tensors from F; random init: conv6.0.weight, ...; unused in F: fc.weight ...``."""
    loaded = sum(1 for name in match.tensors if _counted(name))
    line = f"loaded {loaded} of {total} backbone tensors from {source}"
    if match.prefix:
        line += f" (keys under {match.prefix!r})"
    if match.unset:
        line += f"; random init: {_names(match.unset)}"
    if match.wrong_shape:
        name, theirs, ours = match.wrong_shape[0]
        line += f"; {len(match.wrong_shape)} of another shape (e.g. {name} {list(theirs)} vs {list(ours)})"
    if match.unused:
        line += f"; unused in the file: {_names(match.unused)}"
    return line


# ------------------------------------------------------------------------------------------ recognizing
#: torchvision architectures a refused file is compared with (their names and shapes, built on the meta device).
_KNOWN_TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "vgg11",
                      "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "inception_v3",
                      "googlenet", "densenet121", "mobilenet_v2", "efficientnet_b0", "alexnet", "convnext_tiny",
                      "vit_b_16")


#: Other architectures a refused file is compared with, registered by their modules (the backbones of
#: this package register theirs in ``backbones.py``; this module imports none of them).
_REGISTERED: List[Callable[[], Iterable[Tuple[str, Dict[str, Tuple[int, ...]]]]]] = []


def register_known_architectures(provider: Callable[[], Iterable[Tuple[str, Dict[str, Tuple[int, ...]]]]]) -> None:
    """Add ``provider() -> [(label, {tensor name: shape})]`` to what :func:`describe_state_dict` compares with."""
    _REGISTERED.append(provider)


@functools.lru_cache(maxsize=1)
def _torchvision_shapes() -> Tuple[Tuple[str, Dict[str, Tuple[int, ...]]], ...]:
    from torchvision import models as tv_models

    known = []
    with torch.device("meta"):
        for name in _KNOWN_TORCHVISION:
            kwargs = {"init_weights": False} if name in ("inception_v3", "googlenet") else {}
            net = getattr(tv_models, name)(weights=None, **kwargs)
            known.append((f"a {name} state dict", {k: tuple(v.shape) for k, v in net.state_dict().items()}))
    return tuple(known)


def _known_shapes() -> List[Tuple[str, Dict[str, Tuple[int, ...]]]]:
    known = list(_torchvision_shapes())
    for provider in _REGISTERED:
        known.extend(provider())
    return known


def describe_state_dict(source: Mapping[str, torch.Tensor], container: Any = None) -> str:
    """What a state dict looks like: ``"a vgg16 state dict"``, ``"a wsol_lightning checkpoint of ..."``.

    Args:
        source: the tensors.
        container: the loaded file (a Lightning checkpoint of this package says what it holds).
    """
    hparams = container.get("hyper_parameters") if isinstance(container, Mapping) else None
    if isinstance(hparams, Mapping) and "backbone" in hparams and "wsol_method" in hparams:
        return (f"a wsol_lightning checkpoint of a {hparams['backbone']} backbone "
                f"(--model.wsol_method {hparams['wsol_method']})")
    best, best_score = None, 0.0
    for label, shapes in _known_shapes():
        prefix, _ = _best_prefix(list(source), {k: k for k in shapes})
        matched = sum(1 for key, tensor in source.items() if key.startswith(prefix)
                      and shapes.get(key[len(prefix):]) == tuple(tensor.shape))
        score = matched / (len(shapes) + len(source) - matched)  # Jaccard of (name, shape) pairs
        if score > best_score:
            best, best_score = label, score
    if best is not None and best_score >= 0.5:
        return best
    return f"an unknown state dict of {len(source)} tensors (e.g. {_names(list(source), 2)})"


# -------------------------------------------------------------------------------------------- loading
def load_state_dict_into(module: torch.nn.Module, source: Mapping[str, torch.Tensor], source_name: str,
                         what: str, aliases: Optional[Mapping[str, str]] = None,
                         required: Optional[Sequence[str]] = None, container: Any = None) -> str:
    """Copy the matching tensors of ``source`` into ``module``; refuse a file that provides too few.

    Args:
        module: the module to load (a backbone).
        source: the file's tensors.
        source_name: how the report names the source (the path).
        what: the module in messages (``"resnet50 backbone"``).
        aliases: other names of the module's tensors.
        required: names the file should provide (default: all).
        container: the whole loaded file, to say what it looks like when refused.

    Returns:
        The report line.
    """
    target = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    match = match_state_dict(source, target, aliases, required)
    needed = len(match.required)
    if match.num_required_loaded < MIN_MATCHED_FRACTION * needed or not match.tensors:
        raise WSOLInputError(
            f"{source_name}: provides {match.num_required_loaded} of the {needed} tensors of a {what} (by name and "
            f"shape); it looks like {describe_state_dict(source, container)}")
    module.load_state_dict(match.tensors, strict=False)
    return report_line(match, sum(1 for name in target if _counted(name)), source_name)


def load_weights_file(module: torch.nn.Module, path: str, what: str, aliases: Optional[Mapping[str, str]] = None,
                      required: Optional[Sequence[str]] = None) -> str:
    """Read ``path`` (any accepted form, see the module docstring) and load it into ``module``.

    Returns:
        The report line (``loaded N of M backbone tensors from path; ...``).
    """
    container = read_torch_file(path)
    source = find_state_dict(container, path)
    return load_state_dict_into(module, source, path, what, aliases, required, container)
