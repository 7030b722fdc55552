"""The servers rooms-bench starts: the `openenv init` template is made once per OpenEnv release."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rooms_bench.servers import TEMPLATE_PACKAGE, generate_template, template_cache


def refuse_to_run(*command: object, **options: object) -> None:
    raise AssertionError(f"ran {command}")


def test_the_template_is_kept_per_openenv_release(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert template_cache().parent == tmp_path / "rooms-bench"
    assert template_cache().name.startswith("openenv-0.")


def test_a_kept_template_is_used_without_running_openenv_init(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", refuse_to_run)
    kept = template_cache() / TEMPLATE_PACKAGE
    kept.mkdir(parents=True)
    (kept / "__init__.py").write_text("RoomsTemplateEnv = 'kept client'\nRoomsTemplateAction = 'kept action'\n")
    monkeypatch.delitem(sys.modules, TEMPLATE_PACKAGE, raising=False)
    template = generate_template()
    assert template.directory == template_cache()
    assert [template.classes.client, template.classes.action] == ["kept client", "kept action"]
