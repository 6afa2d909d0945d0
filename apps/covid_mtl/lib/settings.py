"""The server's own settings, read once when the app starts (``--conf`` first, then the environment) and passed
to the parts that use them; nothing reads the environment per request.

| setting | ``--conf`` | environment | default |
|---|---|---|---|
| largest upload | ``max_upload_mb`` | ``COVID_MTL_MAX_UPLOAD_MB`` | 2048 |
| memory one image may take while read | ``max_image_mb`` | ``COVID_MTL_MAX_IMAGE_MB`` | 2048 (``covid_mtl.io.checks``) |
| host names served besides IPs and localhost | | ``COVID_MTL_ALLOWED_HOSTS`` (comma-separated; ``*``: any) | none |
| browser origins allowed | | ``COVID_MTL_CORS_ORIGINS`` (plus MONAI Label's own setting) | none |
| JWT algorithms accepted (auth on) | | ``COVID_MTL_AUTH_ALGORITHMS`` | RS256 |
| run on an unchecked MONAI Label version | ``allow_unsupported_monailabel`` | | false |
| store each infer's results in the PACS (SEG + SR) | ``store_results`` | | false |
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from covid_mtl.io.checks import DEFAULT_MAX_IMAGE_MB

DEFAULT_MAX_UPLOAD_MB = 2048.0


def _csv(value: Optional[str]) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _number(name: str, value: Optional[str], default: float) -> float:
    if value is None or not str(value).strip():
        return default
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"server setting {name} must be a number of MB, not {value!r}") from None
    if number <= 0:
        raise ValueError(f"server setting {name} must be positive, not {value!r}")
    return number


@dataclass(frozen=True)
class AppSettings:
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_image_mb: float = float(DEFAULT_MAX_IMAGE_MB)
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    auth_algorithms: tuple[str, ...] = ("RS256",)
    allow_unsupported_monailabel: bool = False
    store_results: bool = False

    @classmethod
    def read(cls, conf: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> "AppSettings":
        """The settings of this start: ``conf`` (``--conf key value``) over ``environ`` over the defaults."""
        return cls(
            max_upload_mb=_number("max_upload_mb", conf.get("max_upload_mb") or environ.get("COVID_MTL_MAX_UPLOAD_MB"),
                                  DEFAULT_MAX_UPLOAD_MB),
            max_image_mb=_number("max_image_mb", conf.get("max_image_mb") or environ.get("COVID_MTL_MAX_IMAGE_MB"),
                                 float(DEFAULT_MAX_IMAGE_MB)),
            allowed_hosts=_csv(environ.get("COVID_MTL_ALLOWED_HOSTS")),
            cors_origins=_csv(environ.get("COVID_MTL_CORS_ORIGINS")),
            auth_algorithms=_csv(environ.get("COVID_MTL_AUTH_ALGORITHMS")) or ("RS256",),
            allow_unsupported_monailabel=str(conf.get("allow_unsupported_monailabel", "")).lower() in ("1", "true"),
            store_results=str(conf.get("store_results", "")).lower() in ("1", "true"),
        )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)
