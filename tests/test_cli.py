"""Tests for the logpipe command line and the README's embedded-default promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
from click.testing import CliRunner

from logpipe.cli import main
from logpipe.record import WIRE_KEYS


class TestDemo:
    def test_demo_writes_every_record_to_the_default_file(self, tmp_path: Path) -> None:
        """`logpipe demo` logs through the chain and says where the records went."""
        result = CliRunner().invoke(main, ["demo"])
        assert result.exit_code == 0, result.output
        docs = [orjson.loads(x) for x in (tmp_path / "logs" / "logpipe.jsonl").read_bytes().splitlines()]
        assert f"made {len(docs)} log calls" in result.output
        assert "logpipe.jsonl" in result.output
        assert all(tuple(d) == WIRE_KEYS for d in docs)
        assert {d["Service"] for d in docs} == {"logpipe-demo"}
        traced = [d for d in docs if d["TraceId"]]
        assert traced and all(len(d["TraceId"]) == 32 for d in traced)
        errors = [d for d in docs if d["Type"] == "error"]
        assert any("Traceback" in d["Field"].get("exception", "") for d in errors)
        assert any(d["FuncName"] == "logpipe.demo.handle_order" for d in docs)

    def test_demo_with_console_exporter(self) -> None:
        """--exporter picks another exporter; console output is readable text."""
        result = CliRunner().invoke(main, ["demo", "--exporter", "console"])
        assert result.exit_code == 0, result.output
        assert "console" in result.output

    def test_demo_rejects_an_unknown_exporter(self) -> None:
        """A bad exporter name is a usage error naming the variable."""
        result = CliRunner().invoke(main, ["demo", "--exporter", "nope"])
        assert result.exit_code == 2
        assert "LOGPIPE_EXPORTER" in result.output and "unknown exporter 'nope'" in result.output


class TestExportersCommand:
    def test_lists_plugins_and_settings(self) -> None:
        """`logpipe exporters` lists installed exporters and their variables."""
        result = CliRunner().invoke(main, ["exporters"], terminal_width=200)
        assert result.exit_code == 0, result.output
        for text in ("file", "console", "spool", "LOGPIPE_EXPORTER", "LOGPIPE_FILE_MAX_BYTES"):
            assert text in result.output


def test_readme_one_liner_leaves_one_record(tmp_path: Path) -> None:
    """The README's promise: one line of setup, one KafkaLog line in the default file."""
    code = (
        "import structlog, logpipe; structlog.configure(processors=logpipe.processors()); "
        'structlog.get_logger().info("hi", user=1)'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (line,) = (tmp_path / "logs" / "logpipe.jsonl").read_bytes().splitlines()
    doc = orjson.loads(line)
    assert tuple(doc) == WIRE_KEYS
    assert (doc["Msg"], doc["Field"], doc["FuncName"]) == ("hi", {"user": 1}, "__main__.<module>")


class TestStartUp:
    """Sub-commands and the package's names load when used, so ``logpipe tail`` starts fast."""

    def test_every_sub_command_loads_and_is_listed(self) -> None:
        from logpipe.cli import COMMANDS

        ctx = main.make_context("logpipe", ["--help"], resilient_parsing=True)
        assert main.list_commands(ctx) == sorted(COMMANDS)
        for name in COMMANDS:
            command = main.get_command(ctx, name)
            assert command is not None and command.name == name
        assert main.get_command(ctx, "no-such-command") is None

    def test_help_lists_every_sub_command(self) -> None:
        from logpipe.cli import COMMANDS

        result = CliRunner().invoke(main, ["--help"])
        assert result.exit_code == 0, result.output
        assert all(f"  {name} " in result.output for name in COMMANDS)

    def test_tail_and_ship_do_not_import_structlog_or_the_renderer(self) -> None:
        """structlog's import pulls rich's tracebacks in: half of ``logpipe tail``'s start-up before."""
        code = (
            "import sys\n"
            "from logpipe.cli import main\n"
            "ctx = main.make_context('logpipe', ['tail', '--help'], resilient_parsing=True)\n"
            "main.get_command(ctx, 'tail'); main.get_command(ctx, 'ship')\n"
            "import logpipe.tail.server\n"
            "print(sorted(m for m in ('structlog', 'logpipe.pipeline', 'logpipe.cli.search') if m in sys.modules))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[]"


class TestPackageNames:
    def test_every_public_name_resolves_to_its_module(self) -> None:
        import importlib

        import logpipe

        for name in logpipe.__all__:
            value = getattr(logpipe, name)
            home = importlib.import_module(logpipe._HOME[name], "logpipe")
            assert value is getattr(home, name)
        assert set(logpipe.__all__) <= set(dir(logpipe))

    def test_an_unknown_name_is_an_attribute_error(self) -> None:
        import pytest

        import logpipe

        with pytest.raises(AttributeError, match="no_such_name"):
            logpipe.no_such_name  # type: ignore[attr-defined]  # noqa: B018
