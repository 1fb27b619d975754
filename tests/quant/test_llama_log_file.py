"""llama.cpp's log file is private, like the worker's (mode 0600), even when an older one was not."""

import os
import stat


def test_llama_log_is_created_readable_by_its_owner_only(tmp_path):
    from quant.llama_log import LOG_FILE_NAME, route_logs

    old = os.umask(0o022)
    try:
        path = route_logs(tmp_path / "logs")
        assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
        older = tmp_path / "older"
        older.mkdir()
        (older / LOG_FILE_NAME).write_text("old\n")
        os.chmod(older / LOG_FILE_NAME, 0o644)
        assert stat.S_IMODE(route_logs(older).stat().st_mode) == 0o600
    finally:
        os.umask(old)
