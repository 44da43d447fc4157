"""Supervisor of the embedded MQTT broker child process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

from engine.children import die_with_parent

log = logging.getLogger("ocppgw.mqtt.embedded")


class EmbeddedBrokerError(Exception):
    pass


class EmbeddedBroker:
    """Starts the broker, waits until it is ready, restarts it if it dies, stops it."""

    def __init__(self, host: str, port: int, start_timeout: float = 10.0, restart_delay: float = 1.0):
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self.restart_delay = restart_delay
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        await self._spawn()
        self._watch = asyncio.create_task(self._supervise(), name="embedded-broker-supervisor")

    async def _spawn(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "connectors.mqtt.embedded_main", self.host, str(self.port),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
            # a session of its own: Ctrl-C in the terminal signals the foreground process group, and
            # the broker must outlive the node's shutdown (it is stopped last, after the flush)
            start_new_session=True,
            env=env,
        )
        assert process.stdout is not None and process.stderr is not None  # both are PIPE
        try:
            line = await asyncio.wait_for(process.stdout.readline(), self.start_timeout)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise EmbeddedBrokerError(
                f"mqtt.embedded.bind {self.host}:{self.port}: the broker did not start within {self.start_timeout:g}s"
            ) from None
        if line.strip() != b"READY":
            await process.wait()
            err = (await process.stderr.read()).decode(errors="replace").strip().splitlines()
            reason = err[-1] if err else f"exited with code {process.returncode}"
            raise EmbeddedBrokerError(f"mqtt.embedded.bind {self.host}:{self.port}: {reason}")
        self._process = process
        asyncio.create_task(self._drain(process.stderr))
        log.info("embedded MQTT broker listening on %s:%d (pid %d)", self.host, self.port, process.pid)

    async def _drain(self, stream: asyncio.StreamReader | None) -> None:
        while stream is not None:
            line = await stream.readline()
            if not line:
                return
            log.warning("%s", line.decode(errors="replace").rstrip())

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            log.error("embedded MQTT broker exited with code %s; restarting", code)
            while not self._stopping:
                await asyncio.sleep(self.restart_delay)
                try:
                    await self._spawn()
                    self.restarts += 1
                    break
                except EmbeddedBrokerError as exc:
                    log.error("%s", exc)

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        if self._watch:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        process = self._process
        if process and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
        log.info("embedded MQTT broker stopped")
