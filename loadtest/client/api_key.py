"""The API key the load tools send, as `Authorization: Bearer <key>`.

One variable carries it, EMBEDSERVE_API_KEY (the server's own: one .env file serves both): the Locust processes, the
open-loop generators and the samplers are children that inherit it, and a server that a sweep or soak starts
requires the very key its clients send. `--api-key` on the command line is exported into it first. With several
keys (the server accepts a comma-separated list), the first is sent.
"""

from __future__ import annotations

import os

from pydantic import SecretStr

API_KEY_ENV = "EMBEDSERVE_API_KEY"


def use_api_key(keys: list[SecretStr]) -> None:
    """The settings' --api-key (already read from EMBEDSERVE_API_KEY when not given) for every client and child."""
    if keys:
        os.environ[API_KEY_ENV] = ",".join(key.get_secret_value() for key in keys)


def authorization(keys: str | None = None) -> dict[str, str]:
    """The header to send for `keys` (default: EMBEDSERVE_API_KEY), or none when there is no key."""
    listed = [key.strip() for key in (keys or os.environ.get(API_KEY_ENV, "")).split(",") if key.strip()]
    return {"Authorization": f"Bearer {listed[0]}"} if listed else {}
