"""The `rooms-bench` command: `rooms_bench.cli.main` in a process that never imports Gradio.

The command's own process runs clients only, and an OpenEnv client has no use for Gradio, which
OpenEnv imports whenever it can (`openenv.core.env_server` catches `ModuleNotFoundError`). A
`None` in `sys.modules` makes that import raise exactly that, so the command starts about 2.5 s
of CPU sooner and holds about 120 MB less beside the servers it measures. The servers it starts,
and the clients whose start-up `rooms-bench startup` measures, are processes of their own.
"""

import sys

sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]

from rooms_bench.cli import main  # noqa: E402  (after Gradio is ruled out)

__all__ = ["main"]
