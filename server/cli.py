"""`embedserve` entry point: serve, export (the server side), bench, sweep, soak, report (the load-testing side).

The one module that names both sides. Every flag is a field of a settings class (server/settings.py,
loadtest/settings.py), so `--help` documents all of them, and each one can also come from EMBEDSERVE_<FIELD> or
from the YAML file named by --config / EMBEDSERVE_CONFIG.
"""

from __future__ import annotations

import logging
import os
import sys

from pydantic_settings import BaseSettings, CliApp, CliSubCommand, SettingsConfigDict

from loadtest.settings import BenchSettings, ReportSettings, SoakSettings, SweepSettings
from server.settings import CONFIG_ENV, ExportSettings, ServeSettings


class ServeCommand(ServeSettings):
    def cli_cmd(self) -> None:
        from server.http.server import run_server

        run_server(self)


class ExportCommand(ExportSettings):
    def cli_cmd(self) -> None:
        from server.engine.export import export

        print(f"exporting {self.model} for {self.backend} (quantize={self.quantize}) ...", file=sys.stderr, flush=True)
        print(export(self, self.calibration_texts()))

    def calibration_texts(self) -> list[str]:
        """--calibration-file's lines, else texts of the load-testing corpus (single words to 400-word passages;
        another seed than the parity texts that judge the result)."""
        if self.calibration_file:
            return [line for line in self.calibration_file.read_text().splitlines() if line.strip()]
        from loadtest.corpus import varied_texts

        return varied_texts(256, seed=2024)


class BenchCommand(BenchSettings):
    def cli_cmd(self) -> None:
        from loadtest.bench import run_bench

        run_bench(self)


class SweepCommand(SweepSettings):
    def cli_cmd(self) -> None:
        from loadtest.api_key import use_api_key
        from loadtest.sweep import run_sweep

        use_api_key(self.api_key)
        run_sweep(self)


class SoakCommand(SoakSettings):
    def cli_cmd(self) -> None:
        from loadtest.api_key import use_api_key
        from loadtest.soak import run_overload, run_soak

        use_api_key(self.api_key)
        if self.overload:
            phases, _ = run_overload(self)
            failed = any(report.failed for _, report in phases)
        else:
            report, _ = run_soak(self)
            failed = report.failed
        if failed:
            sys.exit(1)


class ReportCommand(ReportSettings):
    def cli_cmd(self) -> None:
        from loadtest.report import write_report

        print(write_report(self))


class EmbedServe(BaseSettings):
    model_config = SettingsConfigDict(cli_prog_name="embedserve", cli_kebab_case=True)

    serve: CliSubCommand[ServeCommand]
    export: CliSubCommand[ExportCommand]
    bench: CliSubCommand[BenchCommand]
    sweep: CliSubCommand[SweepCommand]
    soak: CliSubCommand[SoakCommand]
    report: CliSubCommand[ReportCommand]

    def cli_cmd(self) -> None:
        CliApp.run_subcommand(self)


def _take_config_flag(argv: list[str]) -> list[str]:
    """`--config FILE` anywhere on the line names the YAML file read by every settings class."""
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            os.environ[CONFIG_ENV] = argv[index + 1]
            return argv[:index] + argv[index + 2 :]
        if arg.startswith("--config="):
            os.environ[CONFIG_ENV] = arg.partition("=")[2]
            return argv[:index] + argv[index + 1 :]
    return argv


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _take_config_flag(list(sys.argv[1:] if argv is None else argv))
    CliApp.run(EmbedServe, cli_args=args)


if __name__ == "__main__":
    main()
