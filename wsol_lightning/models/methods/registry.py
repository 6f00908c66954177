"""Name -> WSOL method class. Adding a method: its file, and one line here."""

from __future__ import annotations

from typing import Dict, Type

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.models.methods.acol import ACoL
from wsol_lightning.models.methods.adl import ADLMethod
from wsol_lightning.models.methods.base import HyperParameter, WSOLMethod
from wsol_lightning.models.methods.cutmix import CutMix
from wsol_lightning.models.methods.has import HideAndSeek
from wsol_lightning.models.methods.spg import SPG

METHODS: Dict[str, Type[WSOLMethod]] = {
    "base": WSOLMethod,
    "has": HideAndSeek,
    "acol": ACoL,
    "spg": SPG,
    "adl": ADLMethod,
    "cutmix": CutMix,
}


def get_method(name: str) -> Type[WSOLMethod]:
    """The method class registered as ``name``; a one-line error for unknown names."""
    if name not in METHODS:
        raise WSOLInputError(f"--model.wsol_method={name}: unknown method; choose one of {sorted(METHODS)}")
    return METHODS[name]


def all_hyperparameters() -> Dict[str, HyperParameter]:
    """Every registered method's hyperparameters, by name (names are unique across methods)."""
    merged: Dict[str, HyperParameter] = {}
    for method in METHODS.values():
        for key, spec in method.hyperparameters.items():
            if key in merged and merged[key] != spec:
                raise RuntimeError(f"hyperparameter {key} declared differently by two methods")
            merged[key] = spec
    return merged
