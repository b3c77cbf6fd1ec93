#!/usr/bin/env python3
"""Execute a Jupyter notebook the way papermill does, reporting progress as JSON lines.

Usage:
  run_notebook.py --input NB.ipynb --output EXECUTED.ipynb [--parameters PARAMS.json] --cwd DIR
                  [--kernel NAME] [--timeout-per-cell S] [--startup-timeout S]

Only the standard library plus nbclient/nbformat are used, so the script runs on any instance that
has Jupyter installed. Stdout carries nothing but events, one JSON object per line:

  {"event":"start","total_cells":N}
  {"event":"cell_start","index":i,"total":N}
  {"event":"stream","index":i,"name":"stdout"|"stderr","text":"..."}   (live, while the cell runs)
  {"event":"cell_end","index":i,"total":N,"status":"completed"|"failed","duration":seconds}
  {"event":"warning","message":"..."}
  {"event":"error","code":"cell_error"|"timeout"|"kernel_error","cell_index":i,"execution_count":n|null,
   "ename":"...","evalue":"...","traceback":[...]}
  {"event":"end","status":"completed"|"failed"|"cancelled"}
  {"event":"fatal","code":"...","message":"..."}   (instead of "end" when nothing could be run)

Cell indices are 0-based positions in the notebook being executed (after parameter injection, before
the error banner cells are added). Human diagnostics go to stderr.

Exit codes: 0 completed, 1 a cell failed (error, timeout, kernel died), 2 bad invocation or notebook
or the kernel could not start (a "fatal" event says which), 3 cancelled by SIGTERM/SIGINT.

Decisions beyond papermill:
- SystemExit with code 0 or no code ends the run successfully: that cell is marked completed and the
  remaining cells are not executed (they stay "pending"). papermill also treats it as success.
- On SIGTERM/SIGINT the kernel is interrupted and shut down, the cell that was running is marked
  "failed" with exception false (it did not raise; it was stopped), the notebook is saved and the
  script exits 3. No error banner is added since the notebook itself did not fail.
- With empty parameters the notebook is left as is, including any earlier injected-parameters cell,
  as papermill does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import keyword
import os
import signal
import sys
import traceback
from datetime import datetime, timezone
from typing import Any, NoReturn

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_FATAL = 2
EXIT_CANCELLED = 3

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
ERROR_MARKER_TAG = "papermill-error-cell-tag"
ERROR_STYLE = "color:red; font-family:Helvetica Neue, Helvetica, Arial, sans-serif; font-size:2em;"
ERROR_MESSAGE_TEMPLATE = (
    '<span style="' + ERROR_STYLE + '">An Exception was encountered at '
    "'<a href=\"#papermill-error-cell\">In [%s]</a>'.</span>"
)
ERROR_ANCHOR_MSG = (
    '<span id="papermill-error-cell" style="' + ERROR_STYLE + '">'
    "Execution using papermill encountered an exception here and stopped:"
    "</span>"
)

# The kernel is interrupted first, so a clean shutdown is quick; this only bounds a stuck kernel.
KERNEL_SHUTDOWN_WAIT_S = 3.0


class Fatal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Events:
    """JSON-lines writer on the real stdout.

    fd 1 is pointed at stderr so that stray writes (the kernel process inherits our fds, C extensions,
    print calls in libraries) can never corrupt the event stream.
    """

    def __init__(self) -> None:
        events_fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._out = os.fdopen(events_fd, "w", encoding="utf-8")

    def emit(self, event: str, **fields: Any) -> None:
        self._out.write(json.dumps({"event": event, **fields}) + "\n")
        self._out.flush()


def now() -> datetime:
    return datetime.now(timezone.utc)


def python_literal(value: Any) -> str:
    """Python source for a JSON value (papermill's PythonTranslator, with repr for exact strings)."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float, str)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def parameters_source(parameters: dict[str, Any]) -> str:
    lines = ["# Parameters"] + [f"{name} = {python_literal(value)}" for name, value in parameters.items()]
    return "\n".join(lines) + "\n"


def load_parameters(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}

    def reject_constant(name: str) -> NoReturn:
        raise ValueError(f"{name} is not valid JSON")

    try:
        with open(path, encoding="utf-8") as f:
            parameters = json.load(f, parse_constant=reject_constant)
    except (OSError, ValueError) as e:
        raise Fatal("invalid_parameters", f"cannot read parameters: {e}") from e
    if not isinstance(parameters, dict):
        raise Fatal("invalid_parameters", "parameters must be a JSON object")
    for name in parameters:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise Fatal("invalid_parameters", f"parameter name {name!r} is not a valid Python identifier")
    return parameters


def load_notebook(path: str) -> nbformat.NotebookNode:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise Fatal("invalid_notebook", f"cannot read notebook: {e}") from e
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise Fatal("invalid_notebook", f"notebook is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise Fatal("invalid_notebook", "notebook JSON must be an object")
    major = raw.get("nbformat")
    if not isinstance(major, int) or isinstance(major, bool):
        raise Fatal("invalid_notebook", "notebook has no nbformat version")
    if major != 4:
        raise Fatal(
            "invalid_notebook",
            f"nbformat {major} is not supported, only nbformat 4 (re-save the notebook with a current Jupyter)",
        )
    cells = raw.get("cells")
    if not isinstance(cells, list) or not all(
        isinstance(cell, dict) and cell.get("cell_type") in ("code", "markdown", "raw") for cell in cells
    ):
        raise Fatal("invalid_notebook", "notebook cells must be a list of code, markdown or raw cells")
    try:
        nb = nbformat.reads(text, as_version=4)
        minor = nb.get("nbformat_minor", 0)
        if not isinstance(minor, int) or minor < 5:
            # Cells inserted below get ids, which nbformat < 4.5 does not allow.
            nb = nbformat.v4.upgrade(nb, from_minor=minor if isinstance(minor, int) else 0)
        for cell in nb.cells:
            cell.setdefault("metadata", nbformat.NotebookNode())
            cell.setdefault("source", "")
            if cell.cell_type == "code":
                cell.setdefault("outputs", [])
    except Exception as e:  # nbformat raises assorted errors on malformed structure
        raise Fatal("invalid_notebook", f"cannot parse notebook: {e}") from e
    nb.setdefault("metadata", nbformat.NotebookNode())
    return nb


def first_tagged(nb: nbformat.NotebookNode, tag: str) -> int:
    for index, cell in enumerate(nb.cells):
        if tag in cell.metadata.get("tags", []):
            return index
    return -1


def parameterize(nb: nbformat.NotebookNode, parameters: dict[str, Any], events: Events) -> None:
    nb.metadata.setdefault("papermill", nbformat.NotebookNode())["parameters"] = parameters
    if not parameters:
        return
    nb.cells = [cell for cell in nb.cells if INJECTED_TAG not in cell.metadata.get("tags", [])]
    cell = nbformat.v4.new_code_cell(source=parameters_source(parameters))
    cell.metadata["tags"] = [INJECTED_TAG]
    position = first_tagged(nb, PARAMETERS_TAG) + 1
    if position == 0:
        events.emit(
            "warning",
            message="Input notebook does not contain a cell with tag 'parameters'; "
            "parameters were injected at the top",
        )
    nb.cells.insert(position, cell)


class StreamingClient(NotebookClient):
    """NotebookClient that forwards stream output as it arrives, not when the cell finishes."""

    def __init__(self, nb: nbformat.NotebookNode, events: Events, **kw: Any) -> None:
        super().__init__(nb, **kw)
        self.events = events

    def process_message(self, msg: dict, cell: nbformat.NotebookNode, cell_index: int) -> Any:
        if msg["msg_type"] == "stream":
            content = msg["content"]
            self.events.emit(
                "stream", index=cell_index, name=content.get("name", "stdout"), text=content.get("text", "")
            )
        return super().process_message(msg, cell, cell_index)


def is_clean_exit(ename: str, evalue: str) -> bool:
    return ename == "SystemExit" and evalue in ("", "0")


class Runner:
    def __init__(self, args: argparse.Namespace, nb: nbformat.NotebookNode, events: Events) -> None:
        self.args = args
        self.nb = nb
        self.events = events
        self.started = now()
        self.executing = False
        self.kernel_ready = False
        self.cancelling = False
        self.last_error: dict[str, Any] | None = None
        self.main_task: asyncio.Task[Any] | None = None

    # --- persistence -------------------------------------------------------------------------------

    def save(self) -> None:
        """Atomic write, so a reader never sees a half-written notebook."""
        output = self.args.output
        tmp = f"{output}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(nbformat.v4.writes(self.nb))
            f.write("\n")
        os.replace(tmp, output)

    # --- papermill metadata ------------------------------------------------------------------------

    def notebook_start(self) -> None:
        meta = self.nb.metadata.setdefault("papermill", nbformat.NotebookNode())
        meta.update(start_time=self.started.isoformat(), end_time=None, duration=None, exception=False)
        for cell in self.nb.cells:
            if cell.cell_type == "code":
                cell.execution_count = None
                cell.outputs = []
            cell.metadata["papermill"] = {
                "exception": False,
                "start_time": None,
                "end_time": None,
                "duration": None,
                "status": "pending",
            }

    def notebook_end(self) -> None:
        end = now()
        self.nb.metadata.papermill.update(
            end_time=end.isoformat(),
            duration=(end - self.started).total_seconds(),
            exception=any(cell.metadata.get("papermill", {}).get("exception") for cell in self.nb.cells),
        )

    def cell_start(self, cell: nbformat.NotebookNode, index: int) -> None:
        cell.metadata.papermill.update(start_time=now().isoformat(), status="running", exception=False)
        self.events.emit("cell_start", index=index, total=len(self.nb.cells))
        self.save()

    def cell_end(self, cell: nbformat.NotebookNode, index: int, status: str, exception: bool) -> None:
        meta = cell.metadata.papermill
        end = now()
        duration = (end - datetime.fromisoformat(meta["start_time"])).total_seconds()
        meta.update(end_time=end.isoformat(), duration=duration, status=status, exception=exception)
        self.events.emit("cell_end", index=index, total=len(self.nb.cells), status=status, duration=duration)
        self.save()

    def add_error_banner(self, index: int, execution_count: int | None) -> None:
        """papermill's error cells: a banner on top linking to an anchor right before the failed cell."""
        anchor = nbformat.v4.new_markdown_cell(ERROR_ANCHOR_MSG)
        anchor.metadata["tags"] = [ERROR_MARKER_TAG]
        banner = nbformat.v4.new_markdown_cell(ERROR_MESSAGE_TEMPLATE % str(execution_count))
        banner.metadata["tags"] = [ERROR_MARKER_TAG]
        self.nb.cells.insert(index, anchor)
        self.nb.cells.insert(0, banner)

    # --- execution ---------------------------------------------------------------------------------

    def on_cell_error(self, cell: nbformat.NotebookNode, cell_index: int, execute_reply: dict) -> None:
        self.last_error = execute_reply["content"]

    def on_signal(self) -> None:
        if self.cancelling or not self.executing or self.main_task is None:
            return
        print("run_notebook: cancelling", file=sys.stderr)
        self.cancelling = True
        self.main_task.cancel()

    def create_client(self) -> StreamingClient:
        kernel_name = self.args.kernel or self.nb.metadata.get("kernelspec", {}).get("name") or "python3"
        client = StreamingClient(
            self.nb,
            self.events,
            timeout=self.args.timeout_per_cell,
            startup_timeout=self.args.startup_timeout,
            kernel_name=kernel_name,
            allow_errors=False,
            record_timing=True,
            resources={"metadata": {"path": self.args.cwd}},
            on_cell_error=self.on_cell_error,
        )
        km = client.create_kernel_manager()
        km.shutdown_wait_time = KERNEL_SHUTDOWN_WAIT_S
        return client

    async def run(self) -> int:
        self.main_task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal)

        self.notebook_start()
        self.events.emit("start", total_cells=len(self.nb.cells))
        self.save()
        client = self.create_client()
        self.executing = True
        status = "cancelled"  # unless the cells run to an outcome
        try:
            try:
                await client.async_start_new_kernel()
                await client.async_start_new_kernel_client()
                self.kernel_ready = True
                info = await client.async_wait_for_reply(await ensure_async(client.kc.kernel_info()))
                if info is not None and "language_info" in info["content"]:
                    self.nb.metadata["language_info"] = info["content"]["language_info"]
            except Exception as e:
                if self.cancelling:
                    raise asyncio.CancelledError() from e
                raise Fatal("kernel_error", f"kernel {client.kernel_name!r} failed to start: {e}") from e
            status = await self.run_cells(client)
        except asyncio.CancelledError:
            pass
        finally:
            # Signals arriving from here on are ignored: cancelling would only abort the cleanup.
            self.executing = False
            self.stop_running_cells()
            await self.shutdown_kernel(client)
            self.notebook_end()
            self.save()
        self.events.emit("end", status=status)
        return {"completed": EXIT_COMPLETED, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}[status]

    async def run_cells(self, client: StreamingClient) -> str:
        for index, cell in enumerate(self.nb.cells):
            self.cell_start(cell, index)
            self.last_error = None
            try:
                await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            except Exception as e:
                # nbclient turns a cancelled wait into DeadKernelError, so check for cancellation first.
                if self.cancelling:
                    raise asyncio.CancelledError() from e
                return self.cell_failed(cell, index, e)
            self.cell_end(cell, index, "completed", exception=False)
        return "completed"

    def cell_failed(self, cell: nbformat.NotebookNode, index: int, error: Exception) -> str:
        execution_count = cell.get("execution_count")
        if isinstance(error, CellExecutionError):
            reply = self.last_error or {}
            ename = reply.get("ename", error.ename)
            evalue = reply.get("evalue", error.evalue)
            if is_clean_exit(ename, evalue):
                self.cell_end(cell, index, "completed", exception=False)
                return "completed"
            code, tb = "cell_error", list(reply.get("traceback", []))
        elif isinstance(error, CellTimeoutError):
            code, ename, evalue, tb = "timeout", "CellTimeoutError", str(error), []
        elif isinstance(error, DeadKernelError):
            code, ename, evalue, tb = "kernel_error", "DeadKernelError", str(error) or "Kernel died", []
        else:
            code, ename, evalue = "kernel_error", type(error).__name__, str(error)
            tb = traceback.format_exception(error)
        self.cell_end(cell, index, "failed", exception=True)
        self.events.emit(
            "error",
            code=code,
            cell_index=index,
            execution_count=execution_count,
            ename=ename,
            evalue=evalue,
            traceback=tb,
        )
        self.add_error_banner(index, execution_count)
        self.save()
        return "failed"

    def stop_running_cells(self) -> None:
        """Only a cancelled run leaves a cell running; it did not raise, so exception stays false."""
        for index, cell in enumerate(self.nb.cells):
            if cell.metadata.get("papermill", {}).get("status") == "running":
                self.cell_end(cell, index, "failed", exception=False)

    async def shutdown_kernel(self, client: StreamingClient) -> None:
        km = client.km
        if km is None or not km.has_kernel:
            return
        try:
            if client.kc is not None:
                client.kc.stop_channels()
            if not self.kernel_ready:
                # Still booting: it would not answer a shutdown request yet.
                await ensure_async(km.shutdown_kernel(now=True))
                return
            if await ensure_async(km.is_alive()):
                # A busy kernel only handles shutdown_request once idle; interrupting gets it there.
                await ensure_async(km.interrupt_kernel())
            await ensure_async(km.shutdown_kernel(now=False))
        except Exception as e:
            print(f"run_notebook: kernel shutdown failed, killing it: {e}", file=sys.stderr)
            with contextlib.suppress(Exception):
                await ensure_async(km.shutdown_kernel(now=True))


class ArgumentParser(argparse.ArgumentParser):
    def __init__(self, events: Events, **kw: Any) -> None:
        super().__init__(**kw)
        self.events = events

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.events.emit("fatal", code="invalid_arguments", message=message)
        sys.exit(EXIT_FATAL)


def parse_args(events: Events) -> argparse.Namespace:
    parser = ArgumentParser(events, description="Execute a notebook papermill-style, with JSON-lines events.")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--parameters")
    parser.add_argument("--cwd", required=True)
    parser.add_argument("--kernel")
    parser.add_argument("--timeout-per-cell", type=int, default=None, help="seconds; none by default")
    parser.add_argument("--startup-timeout", type=int, default=60, help="seconds")
    args = parser.parse_args()
    if not os.path.isdir(args.cwd):
        parser.error(f"--cwd {args.cwd} is not a directory")
    if args.timeout_per_cell is not None and args.timeout_per_cell <= 0:
        parser.error("--timeout-per-cell must be positive")
    return args


def main() -> int:
    events = Events()
    args = parse_args(events)
    # Kernels inherit this environment; the flag silences ipykernel's debugger warning on stderr.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    runner: Runner | None = None
    try:
        parameters = load_parameters(args.parameters)
        nb = load_notebook(args.input)
        parameterize(nb, parameters, events)
        output_dir = os.path.dirname(os.path.abspath(args.output))
        os.makedirs(output_dir, exist_ok=True)
        runner = Runner(args, nb, events)
        return asyncio.run(runner.run())
    except Fatal as e:
        events.emit("fatal", code=e.code, message=e.message)
        return EXIT_FATAL
    except Exception as e:
        traceback.print_exc()
        events.emit("fatal", code="internal_error", message=f"{type(e).__name__}: {e}")
        return EXIT_FATAL


if __name__ == "__main__":
    sys.exit(main())
