"""The registry of submission schemas by name, and the field paths each one offers.

A definition names its schema (``submission_schema: newborn/v1``); `SUBMISSION_SCHEMAS` maps
that name to the pydantic model, and `field_paths` lists the dotted paths a definition may
refer to.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from bundles.submissions.address_change import SCHEMA_NAME as ADDRESS_CHANGE_V1
from bundles.submissions.address_change import AddressChangeSubmission
from bundles.submissions.newborn import SCHEMA_NAME as NEWBORN_V1
from bundles.submissions.newborn import NewbornSubmission

SUBMISSION_SCHEMAS: dict[str, type[BaseModel]] = {
    NEWBORN_V1: NewbornSubmission,
    ADDRESS_CHANGE_V1: AddressChangeSubmission,
}


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    # Unwraps Optional/Union/Annotated; containers such as dict[str, bool] hold no model to walk.
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return [model for arg in typing.get_args(annotation) for model in _nested_models(arg)]
    return []


def field_paths(model: type[BaseModel]) -> frozenset[str]:
    """Every dotted path in a submission model, nested sections and their fields alike.

    Args:
        model: A submission schema, e.g. `NewbornSubmission`.

    Returns:
        Paths such as ``birth_parent``, ``birth_parent.mailing_address`` and
        ``birth_parent.mailing_address.postal_code``.
    """
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        paths.add(name)
        for nested in _nested_models(info.annotation):
            paths.update(f"{name}.{sub}" for sub in field_paths(nested))
    return frozenset(paths)
