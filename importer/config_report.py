"""`importer config`: every setting's effective value and where it came from, secrets masked.

The rows are Settings' own fields, whatever they are: a key added to Settings shows up
here without a change. Sources follow `load_settings`: an IMPORTER_* environment variable
wins over the same key in the file IMPORTER_CONFIG names, which wins over the default.
A derived default (the database and mail URLs inside the data dir) is shown resolved.

Masking goes by a rule, not a list: a key whose name holds a secret word (secret, token,
password, ...) shows only whether it is set, or for a `*_keys` list its key ids; any URL
shows its user part (a name, a password, an API key given as the user) as `***`, and
the value of every query parameter whose name holds a secret word (pass, pwd, key, auth,
token, secret, ...) as `***`; a key named `*key*` that holds a path (a TLS key file) is
shown, since the path is no secret.
"""

from __future__ import annotations

import os
import re
import types
import typing
from enum import StrEnum
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import unquote_plus

from rich.table import Table

from importer.config import ENV_PREFIX, Settings

MASK = "***"
SECRET_WORDS = frozenset({"secret", "secrets", "token", "password", "passphrase", "credentials"})
KEY_WORDS = frozenset({"key", "keys"})  # secret material unless the value is a path
# a query parameter whose name holds one of these is masked: sslpassword, api_key, apikey,
# auth_token, pwd, client_secret, ...
PARAM_WORDS = ("pass", "pwd", "key", "auth", "token", "secret", "credential")
_PARAM_SEPARATOR = re.compile(r"([&;])")

JsonValue = str | int | float | bool | None


class Source(StrEnum):
    environment = "environment"
    file = "file"
    default = "default"


class ConfigEntry(TypedDict):
    """One key of `importer config --json`, which prints an object of them by variable:

        {"IMPORTER_CONFIG": {"value": "/etc/importer/importer.toml", "source": "environment"},
         "IMPORTER_DATA_DIR": {"value": "/var/lib/importer", "source": "file"},
         "IMPORTER_DATABASE_URL": {"value": "postgresql+psycopg://***@db/importer",
                                   "source": "environment"},
         "IMPORTER_SECRET_KEYS": {"value": "k2:***,k1:***", "source": "environment"},
         "IMPORTER_MAX_PAGES": {"value": 5000, "source": "default"}}

    `source` is where the value came from: "environment" (the IMPORTER_* variable), "file"
    (the file IMPORTER_CONFIG names) or "default" (Settings' default, derived ones
    resolved). IMPORTER_CONFIG itself comes first, null when unset.
    """

    value: JsonValue
    source: Source


ConfigReport = dict[str, ConfigEntry]


def variable(name: str) -> str:
    return ENV_PREFIX + name.upper()


def config_report(settings: Settings) -> ConfigReport:
    """The report for settings that `load_settings` built from this process's environment."""
    in_env = {
        k.lower().removeprefix(ENV_PREFIX.lower()) for k in os.environ if k.startswith(ENV_PREFIX)
    }
    config_file = os.environ.get(variable("config"))
    report: ConfigReport = {
        variable("config"): ConfigEntry(
            value=config_file,
            source=Source.environment if config_file is not None else Source.default,
        )
    }
    dumped = settings.model_dump(mode="json")
    for name, field in type(settings).model_fields.items():
        if name in in_env:
            source = Source.environment
        elif name in settings.model_fields_set:
            source = Source.file
        else:
            source = Source.default
        value = dumped[name]
        derived = getattr(settings, f"resolved_{name}", None)
        if value in ("", None) and isinstance(derived, str):
            value = derived
        report[variable(name)] = ConfigEntry(
            value=mask(name, value, holds_path=_is_path(field.annotation)), source=source
        )
    return report


def mask(name: str, value: JsonValue, *, holds_path: bool = False) -> JsonValue:
    """`value` with its secrets replaced by `***`, by the rule in the module docstring."""
    words = set(name.lower().split("_"))
    if not isinstance(value, str):
        return value
    if words & SECRET_WORDS or (words & KEY_WORDS and not holds_path):
        if not value:
            return value
        if name.lower().endswith("_keys"):
            return ",".join(f"{item.partition(':')[0].strip()}:{MASK}" for item in value.split(","))
        return MASK
    if "://" in value:
        return mask_url(value)
    return value


def mask_url(url: str) -> str:
    """The URL with its user part and secret-named query parameters masked. Everything
    before the last '@' of the authority is masked, as a password may hold '@', '/' or
    '?': never less than the user part, at worst also what came after it."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, after = rest.rpartition("@")
    if at:
        rest = f"{MASK}@{after}"
    base, question, query = rest.partition("?")
    params = "".join(_masked_param(part) for part in _PARAM_SEPARATOR.split(query))
    return scheme + sep + base + question + params


def _masked_param(part: str) -> str:
    name, equals, _ = part.partition("=")
    if equals and any(word in unquote_plus(name).lower() for word in PARAM_WORDS):
        return f"{name}={MASK}"
    return part


def _is_path(annotation: Any) -> bool:
    if annotation is Path:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return Path in typing.get_args(annotation)
    return False


def config_table(report: ConfigReport) -> Table:
    """The report as a terminal table; the IMPORTER_CONFIG row names the file."""
    table = Table("key", "value", "source")
    for key, entry in report.items():
        value = entry["value"]
        table.add_row(key, "" if value is None else str(value), entry["source"].value)
    return table
