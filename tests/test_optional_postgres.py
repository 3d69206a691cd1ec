"""psycopg is an optional dependency (the `postgres` extra): a SQLite deployment imports,
starts and runs the CLI without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_the_daemon_and_cli_import_and_run_without_psycopg(tmp_path: Path) -> None:
    # sys.modules[name] = None makes every `import psycopg` raise ImportError, as if the
    # package were not installed
    script = textwrap.dedent(f"""
        import sys
        for name in ("psycopg", "psycopg_binary", "psycopg_pool", "asyncpg"):
            sys.modules[name] = None
        import schedd.cli, schedd.daemon, schedd.services
        from schedd.config import Settings
        from schedd.daemon import build_app
        build_app(Settings(db={str(tmp_path / "x.db")!r}))
        sys.argv = ["schedd", "--help"]
        try:
            schedd.cli.main()
        except SystemExit as e:
            assert e.code in (0, None), e.code
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("psycopg", "asyncpg")
                        and sys.modules[m] is not None)
        assert not loaded, loaded
        print("ok")
    """)
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")
