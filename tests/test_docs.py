"""The README and docs/ against the code: every `embedserve` command they show parses with the real CLI, every flag
they name exists, every subcommand's --help runs, and every page, anchor, path and make target they point at is there.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

import pytest
from pydantic_settings import CliApp

from cli import EmbedServe, main
from tests.helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SUBCOMMANDS = {name: field.annotation.__args__[0] for name, field in EmbedServe.model_fields.items()}
# Flags of other programs the docs show beside embedserve's: Locust's own, Docker Compose's, pip's, TEI's.
OTHER_PROGRAMS_FLAGS = {
    "--headless",
    "--processes",
    "--master",
    "--worker",
    "--master-host",
    "--profile",
    "--no-deps",
    "--max-concurrent-requests",
    # infinity_emb v2, the peer server of docs/results' comparison
    "--model-id",
    "--served-model-name",
    "--engine",
}
FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*[a-z0-9](?![\w-])")
REPO_PATH = re.compile(r"^(?:cli|corpus|server|loadtest|monitoring|deploy|tests|tools|docs)/[\w./-]*$")


def code_spans(text: str) -> list[str]:
    """Inline code, and each logical line of the code blocks (continuations joined, comments dropped)."""
    spans = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            spans.append(line.split(" #")[0].strip())
    outside_blocks = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)
    return spans + re.findall(r"`([^`\n]+)`", outside_blocks)


def documented_commands() -> list[tuple[str, str]]:
    """Command lines with arguments (`embedserve report` alone names the command, it is not one to run)."""
    return [
        (page.relative_to(ROOT).as_posix(), span)
        for page in PAGES
        for span in code_spans(page.read_text())
        if span.startswith("embedserve ") and len(span.split()) > 2
    ]


def parse(command: str):
    """The settings a documented command line gives, parsed and validated as the CLI does, without running it."""
    args = shlex.split(command)[1:]
    subcommand, rest = args[0], args[1:]
    assert subcommand in SUBCOMMANDS, f"`embedserve {subcommand}` is no subcommand"
    command_class = SUBCOMMANDS[subcommand]
    nested = {name: field.annotation.__args__[0] for name, field in command_class.model_fields.items()
              if name == (rest or [""])[0] and field.annotation.__args__}  # fmt: skip
    if nested:  # `embedserve advise compare ...`
        command_class, rest = nested[rest[0]], rest[1:]
    if "--help" in rest:
        return None
    if "--config" in rest:  # a global flag, read before the subcommand's own (cli.main)
        at = rest.index("--config")
        rest = rest[:at] + rest[at + 2 :]
    settings_class = command_class.__mro__[1]  # the settings class under the command (no cli_cmd)
    return CliApp.run(settings_class, cli_args=rest)


@pytest.mark.parametrize(("page", "command"), documented_commands())
def test_every_documented_command_parses_with_the_real_cli(page, command, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a documented path need not exist to parse; nothing is run
    try:
        parse(command)
    except SystemExit as exit:
        pytest.fail(f"{page}: `{command}` does not parse (exit {exit.code})")


def test_a_command_with_a_wrong_flag_or_value_is_caught(capsys):
    with pytest.raises(SystemExit):
        parse("embedserve serve --no-such-flag")
    with pytest.raises(SystemExit):
        parse("embedserve export --trust-remote-code true")  # booleans are bare flags
    assert parse("embedserve export --trust-remote-code").trust_remote_code is True
    assert parse("embedserve serve --no-allow-export").allow_export is False


@pytest.mark.parametrize("subcommand", sorted(SUBCOMMANDS))
def test_every_subcommand_answers_help(subcommand, capsys):
    with pytest.raises(SystemExit) as exit:
        main([subcommand, "--help"])
    assert exit.value.code == 0 and f"usage: embedserve {subcommand}" in capsys.readouterr().out


@cache
def embedserve_flags() -> set[str]:
    flags = {"--config", "--help"}
    for command in SUBCOMMANDS.values():
        for name, field in command.model_fields.items():
            flag = "--" + name.replace("_", "-")
            flags.add(flag)
            if field.annotation is bool:
                flags.add("--no-" + flag[2:])
    return flags


@cache
def locustfile_flags() -> set[str]:
    return set(re.findall(r'add_argument\(\s*"(--[\w-]+)"', (ROOT / "loadtest" / "locustfile.py").read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_flag_the_docs_name_exists(page):
    known = embedserve_flags() | locustfile_flags() | OTHER_PROGRAMS_FLAGS
    named = {flag for span in code_spans(page.read_text()) for flag in FLAG.findall(span)}
    assert not named - known, f"{page.name} names flags that nothing defines: {sorted(named - known)}"


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_link_and_path_the_docs_name_exists(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name} links to {target}, which is not there"
        if anchor:
            assert anchor in anchors(resolved), f"{page.name} links to #{anchor}, no heading of {resolved.name}"
    for span in code_spans(text):
        for word in span.split():
            path = word.split("::")[0].rstrip(",.:;)")
            if REPO_PATH.match(path):
                assert (ROOT / path).exists(), f"{page.name} names {path}, which is not in the repository"


def test_every_make_target_the_docs_name_exists():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    for page in PAGES:
        for span in code_spans(page.read_text()):
            for target in re.findall(r"^make ([\w-]+)", span):
                assert target in targets, f"{page.name} names `make {target}`, which the Makefile lacks"


def test_the_readme_stays_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, "the reference belongs in docs/, the README is a front door"
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)\)", readme))
    pages = {page.relative_to(ROOT).as_posix() for page in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"pages the README does not link: {sorted(pages - linked)}"
