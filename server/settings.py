"""One typed place for configuration: CLI flags > EMBEDSERVE_* environment > YAML file > defaults.

The YAML file is named by ``--config PATH`` or ``EMBEDSERVE_CONFIG``; its keys are the field names below. Booleans
are flags on the command line: ``--trust-remote-code`` alone, ``--no-allow-export`` to turn one off.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    CliApp,
    CliSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
Quantization = Literal["none", "int8", "int8-weights"]
CONFIG_ENV = "EMBEDSERVE_CONFIG"
# How every embedserve program logs (`embedserve`, the export child).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _split_commas(value: object) -> object:
    """`--backends torch,onnx` and `EMBEDSERVE_BACKENDS=torch,onnx` read as lists."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _parse_duration(value: object) -> object:
    """`30s`, `2m`, `1m30s` or a number of seconds."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", value)
        if not match or not any(match.groups()):
            raise ValueError(f"not a duration: {value!r} (examples: 30s, 2m, 1m30s, 45)")
        minutes, seconds = match.groups()
        return float(minutes or 0) * 60 + float(seconds or 0)
    return value


Duration = Annotated[float, BeforeValidator(_parse_duration)]
Item = TypeVar("Item")
#: a list flag written `a,b,c` (or as a JSON list): `CommaList[str]`
CommaList = Annotated[list[Item], NoDecode, BeforeValidator(_split_commas)]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "embedserve"


class SettingsBase(BaseSettings):
    """Every settings class of embedserve: EMBEDSERVE_* environment, then the YAML file of --config."""

    model_config = SettingsConfigDict(
        env_prefix="EMBEDSERVE_",
        cli_kebab_case=True,
        # One flag style for the whole CLI: `--trust-remote-code`, `--no-allow-export`.
        cli_implicit_flags=True,
        extra="ignore",
        protected_namespaces=(),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_path := os.environ.get(CONFIG_ENV):
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_path))
        return tuple(sources)


Parsed = TypeVar("Parsed", bound=BaseSettings)


def take_config_flag(argv: list[str]) -> list[str]:
    """`--config FILE` anywhere on the line names the YAML file every settings class reads (EMBEDSERVE_CONFIG)."""
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            os.environ[CONFIG_ENV] = argv[index + 1]
            return argv[:index] + argv[index + 2 :]
        if arg.startswith("--config="):
            os.environ[CONFIG_ENV] = arg.partition("=")[2]
            return argv[:index] + argv[index + 1 :]
    return argv


def parse_cli(settings_class: type[Parsed], prog: str, argv: list[str] | None = None) -> Parsed:
    """A settings object from a command line (sys.argv by default), for a module run as a program of its own."""
    args = take_config_flag(list(sys.argv[1:] if argv is None else argv))
    source = CliSettingsSource(settings_class, cli_prog_name=prog)
    return CliApp.run(settings_class, cli_args=args, cli_settings_source=source)


class EngineSettings(SettingsBase):
    """What loading one model on one backend needs (shared by serve, export and bench)."""

    model: str = Field(DEFAULT_MODEL, description="Hugging Face model ID or local directory")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto picks cuda when nvidia-smi lists a GPU (torch is not imported to ask), else cpu"
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="compute dtype of torch, and of OpenVINO (bfloat16 on CPUs with AVX512-BF16 or AMX; float32 "
        "otherwise); auto = float32 on CPU, float16 on CUDA (bfloat16 where the model needs it)",
    )
    cache: Path = Field(
        default_factory=default_cache_dir,
        description="where exported ONNX/OpenVINO artefacts live (env EMBEDSERVE_CACHE)",
    )
    max_tokens: int | None = Field(
        None, ge=1, description="cap on tokens per input, below the model's own limit (default: the model's limit)"
    )
    max_batch_tokens: int | None = Field(
        None,
        ge=1,
        description="token budget of one forward pass (padded length x inputs); default 2048 on CPU, 32768 on CUDA",
    )
    max_batch_inputs: int = Field(256, ge=1, description="most inputs in one forward pass")
    cpu_threads: int | None = Field(None, ge=1, description="intra-op threads per backend (default: runtime's own)")
    openvino_hint: Literal["LATENCY", "THROUGHPUT"] = Field("LATENCY", description="OpenVINO performance hint")
    allow_export: bool = Field(True, description="export missing ONNX/OpenVINO artefacts on first use")
    trust_remote_code: bool = Field(
        False, description="allow models whose repository ships its own modelling code (e.g. JinaBERT) to run it"
    )
    model_registry: Path | None = Field(
        None, description="YAML file of your own model entries, same format as server/engine/models.yaml (yours win)"
    )


class ServeSettings(EngineSettings):
    """`embedserve serve`: one LitServe server, one endpoint per backend."""

    backends: CommaList[str] = Field(
        ["torch", "onnx", "openvino"],
        description="backends to serve, comma separated: torch, onnx, openvino, candle, ort (Rust); variants: "
        "onnx-int8, openvino-int8, openvino-int8-weights",
    )
    default_backend: str | None = Field(None, description="backend behind POST /v1/embeddings (default: first)")
    host: str = Field("127.0.0.1", description="bind address (0.0.0.0 in containers)")
    port: int = Field(8000, ge=1024, le=65535, description="HTTP port")
    api_servers: int = Field(1, ge=1, description="HTTP front processes")
    max_batch_requests: int = Field(32, ge=1, description="requests merged into one dynamic batch")
    batch_timeout_ms: float = Field(
        0.0,
        ge=0,
        description="how long a batch waits for more requests after the first; 0: it takes what is queued (requests "
        "that arrive while a batch runs form the next one)",
    )
    max_queue: int = Field(
        256,
        ge=1,
        description="hard bound on requests in flight per backend (per HTTP process); beyond it: 503 + Retry-After",
    )
    max_queue_wait_ms: float = Field(
        10000.0,
        ge=0,
        description="shed a request at once (503 server_overloaded + Retry-After) when the work queued ahead of it "
        "for its backend, over the backend's measured throughput, would make it wait longer than this; a request "
        "that still waited longer before its batch starts is shed the same way; set it to your latency budget; "
        "0: off",
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="request body limit; beyond it: 413")
    max_request_tokens: int = Field(300_000, ge=1, description="tokens per request (OpenAI: 300000)")
    request_timeout_s: float = Field(60.0, gt=0, description="longest a request may wait in the queue")
    gzip_responses: bool = Field(
        False, description="gzip responses for clients that accept it (level 1; costs CPU in the HTTP process)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="server log level")
    allow_image_urls: bool = Field(
        False, description="image-text models: fetch http(s) image URLs in `input` (off: only data:image/ URIs)"
    )
    metrics_dir: Path | None = Field(
        None, description="where server processes keep Prometheus metric files (default: a fresh temporary directory)"
    )
    api_key: CommaList[SecretStr] = Field(
        [],
        description="API keys, comma separated: clients then send `Authorization: Bearer <key>` (the OpenAI SDK's "
        "api_key) to the embeddings and model routes, or get 401; /health and /ready stay open; better from the "
        "environment (EMBEDSERVE_API_KEY) or --api-key-file than on a command line that `ps` shows",
    )
    api_key_file: Path | None = Field(
        None, description="a file of API keys, one per line (a mounted Kubernetes Secret, a Docker secret)"
    )
    metrics_need_key: bool = Field(
        False, description="with API keys: /metrics needs one too (Prometheus then sends it: `authorization:`)"
    )
    cors_origins: CommaList[str] = Field(
        [], description="browser origins allowed to call the API (CORS), comma separated; `*` for any; off when empty"
    )

    @property
    def default_backend_name(self) -> str:
        return self.default_backend or self.backends[0]

    def api_keys(self) -> list[str]:
        """Every accepted key: --api-key's, then the file's (blank lines and # comments skipped)."""
        keys = [key.get_secret_value() for key in self.api_key]
        if self.api_key_file is not None:
            lines = self.api_key_file.read_text().splitlines()
            keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        return [key for key in keys if key]


class ExportSettings(SettingsBase):
    """`embedserve export`: write an ONNX or OpenVINO artefact into the cache."""

    model: str = Field(DEFAULT_MODEL, description="Hugging Face model ID or local directory")
    backend: Literal["onnx", "openvino"] = Field("onnx", description="runtime to export for")
    quantize: Quantization = Field(
        "none",
        description="int8: calibrated (ONNX: SmoothQuant + dynamic int8; OpenVINO: NNCF static); int8-weights: "
        "OpenVINO weight-only compression",
    )
    calibration_file: Path | None = Field(
        None, description="int8: texts to calibrate on, one per line (default: 256 texts of the built-in corpus)"
    )
    cache: Path = Field(default_factory=default_cache_dir, description="artefact cache (env EMBEDSERVE_CACHE)")
    force: bool = Field(False, description="export again even when the artefact exists")
    trust_remote_code: bool = Field(False, description="allow the model's own modelling code to run for the export")
