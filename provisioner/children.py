"""The child processes ``provisioner serve`` keeps running: the extra phones' processes
(:class:`provisioner.web.phoneserver.Children`) and the push worker
(:class:`provisioner.workerprocess.WorkerProcess`).

Each is ``python -m provisioner <command>`` with ``serve``'s environment and database URL,
started again a second after it exits, stopped with SIGTERM (SIGKILL after
:data:`STOP_TIMEOUT`), and killed by the kernel should ``serve`` die first
(:func:`provisioner.signals.die_with_parent`, through :data:`~provisioner.signals.PARENT_ENV`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from provisioner import command
from provisioner.signals import PARENT_ENV

#: Seconds before a child that exited is started again.
RESTART_DELAY = 1.0

#: Seconds a child gets to finish after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


def child_env(database_url: str, **extra: str) -> dict[str, str]:
    """This process's environment for a child, with the resolved database URL (the embedded
    cluster's too) and this process as its parent; systemd's notifications stay the parent's."""
    env = {
        **os.environ,
        "PROVISIONER_DATABASE_URL": database_url,
        PARENT_ENV: str(os.getpid()),
        **extra,
    }
    env.pop("NOTIFY_SOCKET", None)
    return env


class KeptChild:
    """Keeps one ``python -m provisioner <args>`` running until :meth:`stop`.

    :param name: how the log lines call it ("phones' process").
    :param log: the logger of the module that owns it.
    :param reports: read its stdout (:meth:`follow`) instead of letting it share ours.
    """

    def __init__(
        self,
        args: tuple[str, ...],
        env: dict[str, str],
        *,
        name: str,
        log: logging.Logger,
        reports: bool = False,
    ) -> None:
        self._args = args
        self._env = env
        self._name = name
        self._log = log
        self._reports = reports
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name=f"child {' '.join(self._args)}")

    async def _keep(self) -> None:
        while True:
            self.starting()
            self.process = await asyncio.create_subprocess_exec(
                *command(*self._args),
                env=self._env,
                stdin=asyncio.subprocess.DEVNULL if self._reports else None,
                stdout=asyncio.subprocess.PIPE if self._reports else None,
            )
            if self.process.stdout is not None:
                await self.follow(self.process.stdout)
            code = await self.process.wait()
            self.exited()
            if self._stopping:
                return
            self._log.warning(
                "%s %d exited with %s; restarting", self._name, self.process.pid, code
            )
            await asyncio.sleep(RESTART_DELAY)

    def starting(self) -> None:
        """Called before each start of the child."""

    async def follow(self, output: asyncio.StreamReader) -> None:
        """Read what the child writes on stdout until it closes it (with ``reports``)."""

    def exited(self) -> None:
        """Called each time the child has exited."""

    async def stop(self) -> None:
        """SIGTERM to the child, SIGKILL if it lingers; no restart after that."""
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                self._log.warning("%s %d killed: still running", self._name, process.pid)
                process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.exited()
