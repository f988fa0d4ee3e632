"""Form fields generated from the engine's dataclasses: same names and defaults as the CLI's options.

FastAPI reads an endpoint's parameters from its signature, so a signature built from `AnimationOptions` (and
`EditParams`) gives one documented form field per option without repeating the list by hand.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, Optional

from fastapi import Form

from runtime.options import (
    ANIMAL_FACE_TYPES,
    ANIMATION_REGIONS,
    AUDIO_PRIORITIES,
    DRIVING_OPTIONS,
    AnimationOptions,
)

CHOICES = {"animation_region": ANIMATION_REGIONS, "driving_option": DRIVING_OPTIONS,
           "audio_priority": AUDIO_PRIORITIES, "animal_face_type": ANIMAL_FACE_TYPES}
_TYPES = {"bool": bool, "int": int, "float": float, "str": str}


def field_type(f: dataclasses.Field) -> Any:
    """The runtime type of a dataclass field whose annotation is a string (``from __future__ import annotations``)."""
    text = str(f.type).replace(" ", "")
    if text.endswith("|None"):
        return Optional[_TYPES[text.removesuffix("|None")]]  # noqa: UP045 - FastAPI needs a real type object
    return _TYPES[text]


def form_parameters(cls: type, prefix_doc: str) -> list[inspect.Parameter]:
    """One keyword-only Form parameter per dataclass field, with its default."""
    params = []
    for f in dataclasses.fields(cls):
        default = f.default
        choices = CHOICES.get(f.name)
        doc = f"{prefix_doc}.{f.name}" + (f"; one of {', '.join(choices)}" if choices else "")
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=field_type(f),
                                        default=Form(default, description=doc)))
    return params


def with_form_fields(fn: Callable, *classes: tuple[type, str]) -> Callable:
    """Extend `fn`'s signature with the dataclasses' fields (fn receives them in **kwargs)."""
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    extra = [p for cls, doc in classes for p in form_parameters(cls, doc)]
    fn.__signature__ = sig.replace(parameters=own + extra)
    return fn


def pick(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of `values` that are fields of `cls`."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def animation_options(values: dict[str, Any]) -> AnimationOptions:
    return AnimationOptions(**pick(AnimationOptions, values))
