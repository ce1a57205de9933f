"""Write an Arcane source plugin in Python.

A plugin is an executable the `plugin` kind of the `arcane` runner starts; it speaks the
protocol of docs/plugins.md (Arrow Flight over a Unix domain socket, protocol version 1).
This module speaks it for you: subclass `Plugin`, then call `serve(MyPlugin())`.

    import pyarrow as pa
    from arcane_plugin import Plugin, serve

    class Count(Plugin):
        def schema(self, config):
            return pa.schema([pa.field("n", pa.int64(), nullable=False)])

        def read(self, config, position):
            start = position or 0
            for n in range(start, config.get("total", 10)):
                batch = pa.record_batch([pa.array([n])], schema=self.schema(config))
                yield batch, n + 1  # the position after this batch (any JSON value)

    serve(Count())

Log to stderr (the runner logs each line); stdout carries the handshake line only.
Raise `PermanentError` for what retrying cannot fix (the run exits 1 with the message) and
`TransientError` for what it may (the runner restarts the plugin with backoff).
Needs pyarrow (with Flight, as in the PyPI wheels).
"""

import json
import os
import sys
import tempfile
import threading

import pyarrow as pa
import pyarrow.flight as flight

PROTOCOL_VERSION = 1


class PermanentError(ValueError):
    """Retrying cannot help: sent as the Flight status InvalidArgument (the run exits 1)."""


class TransientError(flight.FlightUnavailableError):
    """Upstream is unavailable: sent as Unavailable (the runner restarts the plugin)."""


class Plugin:
    """What a plugin does; `serve` speaks the protocol around it."""

    def schema(self, config):
        """The pyarrow.Schema of every batch `read` yields for `config` (a dict)."""
        raise NotImplementedError

    def read(self, config, position):
        """Yield `(record_batch, position_after_it)` after `position` (None: from the start).

        Resuming from a position must yield exactly the rows after it. Ending the generator
        ends the run (after everything is committed). While waiting for data, yield an empty
        batch with the current position at least every `readTimeout` of the spec (5m)."""
        raise NotImplementedError

    def commit(self, position):
        """Everything up to `position` is committed by the sink: ack it upstream if needed."""


class _Server(flight.FlightServerBase):
    def __init__(self, plugin, location):
        super().__init__(location)
        self._plugin = plugin

    def get_schema(self, context, descriptor):
        config = json.loads(descriptor.command or b"{}")
        return flight.SchemaResult(self._plugin.schema(config))

    def do_get(self, context, ticket):
        request = json.loads(ticket.ticket)
        config = request.get("config") or {}
        position = request.get("position")
        schema = self._plugin.schema(config)

        def batches():
            for batch, after in self._plugin.read(config, position):
                if batch.schema != schema:
                    batch = batch.cast(schema) if batch.schema.names == schema.names else batch
                yield batch, pa.py_buffer(json.dumps(after).encode())

        return flight.GeneratorStream(schema, batches())

    def do_action(self, context, action):
        if action.type == "commit":
            self._plugin.commit(json.loads(action.body.to_pybytes()))
        elif action.type == "shutdown":
            sys.stderr.write("arcane_plugin: shutdown requested\n")
            sys.stderr.flush()
            # shutdown() waits for the calls in flight, this one included: from another thread,
            # and exit anyway if a call does not end.
            threading.Thread(target=self.shutdown, daemon=True).start()
            deadline = threading.Timer(3.0, os._exit, args=(0,))
            deadline.daemon = True
            deadline.start()
        else:
            raise PermanentError(f"unknown action {action.type!r}; the protocol has commit and shutdown")
        return []

    def list_actions(self, context):
        return [("commit", "everything up to the position is committed"), ("shutdown", "stop")]


def _exit_when_runner_is_gone(socket):
    # The runner holds the write end of stdin: EOF means it is gone (even after a SIGKILL).
    try:
        while os.read(0, 65536):  # the raw descriptor: no buffer lock held at exit
            pass
    except OSError:
        pass
    try:
        # stderr may be gone with the runner.
        sys.stderr.write("arcane_plugin: the runner is gone (stdin closed); exiting\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    try:
        os.unlink(socket)
    except OSError:
        pass
    os._exit(0)


def serve(plugin):
    """Listen on a Unix socket, print the handshake line, serve until `shutdown`."""
    directory = tempfile.mkdtemp(prefix="arcane-plugin-")
    socket = os.path.join(directory, "plugin.sock")
    server = _Server(plugin, f"grpc+unix://{socket}")
    sys.stdout.write(f"ARCANE-PLUGIN|{PROTOCOL_VERSION}|unix|{socket}\n")
    sys.stdout.flush()
    threading.Thread(target=_exit_when_runner_is_gone, args=(socket,), daemon=True).start()
    try:
        server.serve()
    finally:
        try:
            os.unlink(socket)
            os.rmdir(directory)
        except OSError:
            pass
