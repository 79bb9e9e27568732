"""`embedserve`: serve and export (the server side); bench, sweep, soak, report and advise (the load-testing side).

The one package that names both sides. Every flag is a field of a settings class (server/settings.py,
loadtest/settings.py), so `--help` documents all of them, and each one can also come from EMBEDSERVE_<FIELD> or
from the YAML file named by --config / EMBEDSERVE_CONFIG.
"""

from __future__ import annotations

import logging
import sys

from pydantic_settings import BaseSettings, CliApp, CliSubCommand, SettingsConfigDict

from loadtest.settings import (
    AdviseCompareSettings,
    AdviseSettings,
    BenchSettings,
    ReportSettings,
    SoakSettings,
    SweepSettings,
)
from server.settings import LOG_FORMAT, ExportSettings, ServeSettings, take_config_flag


class ServeCommand(ServeSettings):
    def cli_cmd(self) -> None:
        from server.http.app import run_server

        run_server(self)


class ExportCommand(ExportSettings):
    def cli_cmd(self) -> None:
        from server.engine.export import run_export

        run_export(self)


class BenchCommand(BenchSettings):
    def cli_cmd(self) -> None:
        from loadtest.bench.run import run_bench

        run_bench(self)


class SweepCommand(SweepSettings):
    def cli_cmd(self) -> None:
        from loadtest.client.api_key import use_api_key
        from loadtest.sweep.run import run_sweep

        use_api_key(self.api_key)
        run_sweep(self)


class SoakCommand(SoakSettings):
    def cli_cmd(self) -> None:
        from loadtest.client.api_key import use_api_key
        from loadtest.soak.run import run_overload, run_soak

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
        from loadtest.probe.fingerprint import drift_lines
        from loadtest.report.page import write_report

        drifted = False
        if len(self.runs) > 1:
            lines = drift_lines(self.runs[0], self.runs[1])
            drifted = any(line.startswith("VECTOR DRIFT") for line in lines)
            print("\n".join(lines))
        if (self.runs[0] / "results.json").exists():
            print(write_report(self))
        if drifted:
            sys.exit(1)


class AdviseCompareCommand(AdviseCompareSettings):
    def cli_cmd(self) -> None:
        from loadtest.advise.compare import CompareError, compare

        try:
            print(compare(self.runs))
        except CompareError as error:
            raise SystemExit(f"embedserve advise compare: {error}") from None


class AdviseCommand(AdviseSettings):
    compare: CliSubCommand[AdviseCompareCommand]

    def cli_cmd(self) -> None:
        if self.compare is not None:
            self.compare.cli_cmd()
            return
        from loadtest.advise.run import run_advise
        from loadtest.client.api_key import use_api_key

        use_api_key(self.api_key)
        run_advise(self)


class EmbedServe(BaseSettings):
    model_config = SettingsConfigDict(cli_prog_name="embedserve", cli_kebab_case=True, cli_implicit_flags=True)

    serve: CliSubCommand[ServeCommand]
    export: CliSubCommand[ExportCommand]
    bench: CliSubCommand[BenchCommand]
    sweep: CliSubCommand[SweepCommand]
    soak: CliSubCommand[SoakCommand]
    report: CliSubCommand[ReportCommand]
    advise: CliSubCommand[AdviseCommand]

    def cli_cmd(self) -> None:
        CliApp.run_subcommand(self)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    args = take_config_flag(list(sys.argv[1:] if argv is None else argv))
    CliApp.run(EmbedServe, cli_args=args)
