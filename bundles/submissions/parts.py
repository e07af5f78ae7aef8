"""Sections every submission schema shares: the strict base of a form section and a Canadian address."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from bundles.validators import LongText, PostalCode, ProvinceCode, ShortText, check_postal_code_province


class Part(BaseModel):
    """A section of a form: frozen, closed to unknown keys, never echoing input in error text."""

    # Input is hidden from error text because a value may be a SIN.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class CanadianAddress(Part):
    """A Canadian address; its postal code must belong to its province or territory."""

    street: LongText
    unit: ShortText | None = None
    municipality: ShortText
    province: ProvinceCode
    postal_code: PostalCode

    @field_validator("postal_code")
    @classmethod
    def _postal_code_in_province(cls, value: str, info: ValidationInfo) -> str:
        # `province` is declared first, so it is in `info.data` whenever it was valid.
        province = info.data.get("province")
        if isinstance(province, str):
            check_postal_code_province(value, province)
        return value
