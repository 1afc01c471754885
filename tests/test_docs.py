"""The docs cannot drift from the code.

* Every relative link in README.md and docs/*.md resolves: the file (or folder) exists, and a
  `#anchor` names a heading of the target page, slugged as GitHub slugs it.
* Every `hashing ...` command in a fenced shell block (```bash, ```sh, ```shell; in ```console
  only the `$ ` lines) parses against the real click CLI: the group's and then the subcommand's
  `make_context`, which checks every option, choice and argument and runs nothing. Lines are
  joined at a trailing `\\`, split at `&&`, `||`, `;` and `|`, cut at a redirection, and a command
  is `hashing ...`, `python -m hashing ...` or `torchrun ... -m hashing ...` after any `VAR=value`
  prefixes. Synopses with [optional] parts belong in ```text blocks, which are not parsed.
* Each guide in docs/ opens by saying what its reader will be able to do; the README keeps the
  set-up commands that CI runs; `hashing --version` and CHANGELOG.md agree with the package.

Paths given on a command line need not exist: no `click.Path` of this CLI sets `exists=True`
(checked below), so parsing never looks at the file system. Should one ever set it, a missing
path is accepted for that parameter only (`_accept_missing_path`), because the docs name example
files (`photos/`, `seven.png`) that no checkout holds.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import click
import pytest

from hashing.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = {"bash", "sh", "shell", "console"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<", "<<", ">&", "&>", "2>", "2>>"}
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


# ---- markdown -----------------------------------------------------------------------------

def blocks(text: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(fenced blocks as (language, lines), the lines outside any fence)."""
    fenced, prose, current, lang, marker = [], [], None, "", ""
    for line in text.splitlines():
        m = FENCE.match(line)
        if current is None and m:
            current, lang, marker = [], m.group(3).lower(), m.group(2)
        elif current is not None and line.strip().startswith(marker[:3]) and line.strip().strip(marker[0]) == "":
            fenced.append((lang, current))
            current = None
        elif current is not None:
            current.append(line)
        else:
            prose.append(line)
    assert current is None, "a fenced block is not closed"
    return fenced, prose


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercased, every character but letters,
    digits, spaces, '-' and '_' removed, spaces turned into '-' (hyphens are not collapsed)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)        # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)                              # inline HTML
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    _, prose = blocks(path.read_text())
    seen: dict[str, int] = {}
    out = set()
    for line in prose:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """Targets of the page's inline links and images, outside code blocks and code spans."""
    _, prose = blocks(path.read_text())
    text = re.sub(r"`[^`\n]*`", "", "\n".join(prose))
    return re.findall(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)


def broken_links(path: Path) -> list[str]:
    out = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):          # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            out.append(f"{target}: no such file")
        elif anchor:
            if dest.suffix != ".md":
                out.append(f"{target}: an anchor into a file that is not markdown")
            elif anchor not in anchors(dest):
                out.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return out


# ---- shell blocks -------------------------------------------------------------------------

def logical_lines(lang: str, lines: list[str]) -> list[str]:
    """The block's command lines: continuations joined, console output and prompts dropped."""
    out, pending = [], None
    for raw in lines:
        line = raw.rstrip()
        if pending is None:
            if lang == "console":
                if not line.startswith("$ "):
                    continue                                         # output
                line = line[2:]
            pending = ""
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        out.append(pending.strip())
        pending = None
    if pending:
        out.append(pending.strip())
    return [line for line in out if line and not line.startswith("#")]


def tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True                                    # '--data-dir' stays one word
    return list(lexer)


def hashing_commands(line: str) -> list[list[str]]:
    """The argument lists of every `hashing` invocation on one shell line."""
    commands, segment = [], []
    for token in [*tokens(line), ";"]:
        if token not in SEPARATORS:
            segment.append(token)
            continue
        words = segment
        for i, word in enumerate(words):                             # a redirection ends the command
            if word in REDIRECTS:
                words = words[:i]
                break
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]                                        # VAR=value prefixes
        if words and words[0] in ("time", "exec"):
            words = words[1:]
        if words and Path(words[0]).name == "hashing":
            commands.append(words[1:])
        elif "-m" in words:
            i = words.index("-m")
            if i + 1 < len(words) and words[i + 1] == "hashing":    # python -m hashing, torchrun ... -m hashing
                commands.append(words[i + 2:])
        segment = []
    return commands


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(page, line, arguments) of every hashing command in a shell block of the docs."""
    found = []
    for page in PAGES:
        fenced, _ = blocks(page.read_text())
        for lang, lines in fenced:
            if lang not in SHELLS:
                continue
            for line in logical_lines(lang, lines):
                for args in hashing_commands(line):
                    found.append((str(page.relative_to(ROOT)), line, args))
    return found


def _accept_missing_path(error: click.BadParameter) -> bool:
    """A click.Path(exists=True) refusing an example path the docs name: not a docs error."""
    kind = getattr(error.param, "type", None)
    return isinstance(kind, click.Path) and kind.exists and "does not exist" in error.format_message()


def parse(args: list[str]) -> None:
    """Parse `hashing ARGS` as the console script would, without invoking anything. Raises
    click.UsageError (bad option, choice, value or command) when the line would not parse."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            ctx = cli.make_context("hashing", list(args), resilient_parsing=False)
            # the subcommand and its arguments (click >= 8.2 keeps the first in _protected_args)
            protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
            rest = [*protected, *ctx.args]
            if not rest:
                return                                               # `hashing` alone: the help
            name, command, sub_args = cli.resolve_command(ctx, rest)
            command.make_context(name, sub_args, parent=ctx, resilient_parsing=False)
        except click.exceptions.Exit as e:                           # --help, --version
            if e.exit_code:
                raise click.UsageError(f"exited with {e.exit_code}") from None
        except click.BadParameter as e:
            if not _accept_missing_path(e):
                raise


# ---- tests --------------------------------------------------------------------------------

def test_every_relative_link_and_anchor_resolves():
    broken = {str(page.relative_to(ROOT)): broken_links(page) for page in PAGES}
    assert {page: b for page, b in broken.items() if b} == {}


def test_every_documented_hashing_command_parses():
    commands = documented_commands()
    assert len(commands) > 40                           # the extraction still finds the docs' commands
    failures = []
    for page, line, args in commands:
        try:
            parse(args)
        except click.UsageError as e:
            failures.append(f"{page}: {line}\n    {e.format_message()}")
    assert failures == [], "\n".join(failures)


def test_the_commands_of_every_subcommand_are_documented():
    documented = {args[0] for _, _, args in documented_commands() if args}
    assert set(cli.commands) <= documented, f"no doc shows: {sorted(set(cli.commands) - documented)}"


def test_the_parser_refuses_what_the_cli_refuses():
    parse(["train", "--dataset", "mnist", "--out", "runs/x", "--bits", "64", "--schedule", "cosine"])
    parse(["--version"])
    parse(["query", "a.png", "--help"])
    for bad in (["train", "--out", "x", "--no-such-option"], ["query", "a.png"], ["nosuchcommand"],
                ["index", "--model", "r", "--out", "o", "--index-type"], ["train", "--out", "x", "--recipe", "nope"],
                ["train", "--out", "x", "--bits", "many"], ["--no-such-flag"]):
        with pytest.raises(click.UsageError):
            parse(bad)


def test_the_extraction_of_commands_from_shell_blocks():
    text = """
```console
$ hashing query a.png --index idx \\
    -k 5 --json | jq .
seven.png: 5 results
```

```bash
python3 -m pip install -e . && hashing train --dataset digits --out r   # a comment
HASHING_MEMORY_BUDGET=0 hashing index --model r --dataset digits --out i > log.txt
torchrun --standalone --nproc_per_node=2 -m hashing train --dataset digits --out d
curl -s http://127.0.0.1:8000/health
```

```text
hashing evaluate --model RUN [--k 1,10]
```
"""
    fenced, _ = blocks(text)
    found = [args for lang, lines in fenced if lang in SHELLS
             for line in logical_lines(lang, lines) for args in hashing_commands(line)]
    assert found == [["query", "a.png", "--index", "idx", "-k", "5", "--json"],
                     ["train", "--dataset", "digits", "--out", "r"],
                     ["index", "--model", "r", "--dataset", "digits", "--out", "i"],
                     ["train", "--dataset", "digits", "--out", "d"]]


def test_slugs_and_anchors_as_github_makes_them():
    assert slug("Copies: `hashing evaluate --task copies`") == "copies-hashing-evaluate---task-copies"
    assert slug("Where a step's time goes") == "where-a-steps-time-goes"
    assert slug("Bit lengths: short codes name kinds, long codes name images") == \
        "bit-lengths-short-codes-name-kinds-long-codes-name-images"
    assert slug("Set-up: two commands") == "set-up-two-commands"
    assert "python-api" in anchors(ROOT / "README.md")


def test_no_cli_path_checks_existence():
    """The premise of parsing the docs' example paths: no click.Path(exists=True) anywhere."""
    checked = [f"{name} {p.name}" for name, command in cli.commands.items() for p in command.params
               if isinstance(p.type, click.Path) and p.type.exists]
    assert checked == []


def test_every_guide_opens_with_what_its_reader_can_do_after_it():
    for page in sorted((ROOT / "docs").glob("*.md")):
        lines = [line for line in page.read_text().splitlines() if line.strip()]
        assert lines[0].startswith("# "), page.name
        assert lines[1].startswith("After this page you "), page.name


def test_the_readme_keeps_the_set_up_commands_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    extras = "'.[dev,milvus,milvus-server,serve,copies]'"
    assert (f"python3 -m pip install torch==2.14.1 torchvision==0.29.1 -e {extras} && "
            "hashing train --dataset mnist --data-dir ../shared/data/mnist --out runs/mnist\n"
            "python3 -m pytest -q\n") in readme
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == "python3 -m pytest -q"
    assert any(line.startswith("python3 -m pip install") and line.endswith(f"-e {extras}") for line in ci)
    assert len(readme.splitlines()) <= 300


def test_version_and_changelog_agree_with_the_package():
    from importlib.metadata import version

    from click.testing import CliRunner

    installed = version("hashing")
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"hashing, version {installed}"
    pyproject = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(r"^## Unreleased", changelog, re.M)
    assert re.search(rf"^## {re.escape(pyproject)}\b", changelog, re.M)
