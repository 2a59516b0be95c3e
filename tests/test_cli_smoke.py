"""The console entry point in a real process: the few things an in-process ``CliRunner`` cannot show."""

from __future__ import annotations

from conftest import run_cli_process


def test_python_dash_m_movprune_starts_and_reports_bad_input_in_one_line(tmp_path):
    import movprune

    version = run_cli_process("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"movprune {movprune.__version__}"

    missing = run_cli_process("run", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error:") and "nope.yaml" in missing.stderr
    assert "Traceback" not in missing.stderr
