"""Time the init phase of a Lambda function built with cargo-lambda.

Lambda's init phase ends when the runtime first requests the next event
(GET /2018-06-01/runtime/invocation/next). This script starts the function's
bootstrap binary once per run, with the environment Lambda and
infra/template.yaml would give it, and measures the time from just before
the process is spawned to the arrival of that first request.

By default the function runs under cargo-lambda's emulator. The script
starts `cargo lambda watch --only-lambda-apis`, which serves the Runtime API
but starts no function. The function connects to a small proxy in front of
the emulator, which records when the first request for the next event
arrives. With --stub there is no emulator: a local Runtime API stub records
the request and never responds to it.

Before the timed runs, one run through the emulator's Function URL endpoint
checks that the function serves a request (a GET returns 405). Every run
kills the function after its first request, so it never reaches AWS.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

NEXT_PATH = b"/2018-06-01/runtime/invocation/next"
# The name cargo-lambda's emulator gives a function that it does not start.
EMULATOR_FUNCTION = "_"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"cold-start: nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


class RuntimeFront:
    """Accepts the function's Runtime API connections on 127.0.0.1.

    Records the time of the first request for the next event since the last
    `reset`. With an upstream address it forwards every byte both ways, so
    the function talks to the emulator as if directly. Without one it sends
    no response, so the function waits for an event until it is killed.
    """

    def __init__(self, upstream: tuple[str, int] | None) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.first_next_ns: int | None = None
        self.arrived = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.first_next_ns = None
            self.arrived.clear()

    def _record(self, data: bytes) -> None:
        if NEXT_PATH not in data:
            return
        now = time.perf_counter_ns()
        with self.lock:
            if self.first_next_ns is None:
                self.first_next_ns = now
                self.arrived.set()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        if self.upstream is not None:
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError as error:
                print(f"cold-start: cannot reach the emulator: {error}", file=sys.stderr)
                client.close()
                return
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream, self._record)


def _pump(source: socket.socket, target: socket.socket | None, inspect=None) -> None:
    """Copies `source` to `target` until either side closes.

    The function's HTTP client writes each small request at once, so on
    loopback a request line arrives within one read and `inspect` receives
    it whole. A missed request line ends the run with a timeout error.
    """
    try:
        while data := source.recv(65536):
            if inspect is not None:
                inspect(data)
            if target is not None:
                target.sendall(data)
    except OSError:
        pass
    finally:
        source.close()
        if target is not None:
            target.close()


def function_env(runtime_api: str, function_name: str, home: str) -> dict[str, str]:
    """Returns the environment of one run: what Lambda sets, plus the
    variables of infra/template.yaml with example values."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/tokenguard-detector",
        "AWS_LAMBDA_LOG_STREAM_NAME": "cold-start",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_SESSION_TOKEN": "cold-start-session",
        # Keeps the SDK from asking the instance metadata service for a region
        # or credentials, which Lambda never needs either.
        "AWS_EC2_METADATA_DISABLED": "true",
        "TOKENGUARD_BASELINE_TABLE": "tokenguard-baseline",
        "TOKENGUARD_FINDINGS_TABLE": "tokenguard-findings",
        "TOKENGUARD_CORRELATION_TABLE": "tokenguard-correlation",
        "TOKENGUARD_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:tokenguard-alerts",
        "TOKENGUARD_LEARNING_PERIOD": "7d",
        "TOKENGUARD_FORGET_AFTER": "28d",
        "TOKENGUARD_CORRELATION_WINDOW": "15m",
        "TOKENGUARD_EGRESS_CIDRS": "203.0.113.0/24",
        "TOKENGUARD_CLUSTERS": "prod",
        "RUST_LOG": "info",
    }


def spawn(binary: Path, env: dict[str, str], log) -> subprocess.Popen:
    return subprocess.Popen([str(binary)], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


def time_init(binary: Path, front: RuntimeFront, env: dict[str, str], log, timeout: float) -> float:
    """Returns the milliseconds from spawn to the first request for the next event."""
    front.reset()
    start = time.perf_counter_ns()
    process = spawn(binary, env, log)
    try:
        if not front.arrived.wait(timeout):
            code = process.poll()
            state = "still runs" if code is None else f"exited with status {code}"
            raise SystemExit(
                f"cold-start: the function sent no request for the next event within {timeout:.0f} s "
                f"and {state}: see its output in {log.name}"
            )
        return (front.first_next_ns - start) / 1e6
    finally:
        stop(process)


def check_invocation(binary: Path, front: RuntimeFront, env: dict[str, str], log, emulator_port: int) -> None:
    """Invokes the function once through the emulator's Function URL endpoint
    and checks that a GET returns 405, as the detector's handler does."""
    process = spawn(binary, env, log)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", emulator_port, timeout=60)
        connection.request("GET", f"/lambda-url/{EMULATOR_FUNCTION}/")
        status = connection.getresponse().status
        connection.close()
    finally:
        stop(process)
    if status != 405:
        raise SystemExit(
            f"cold-start: a GET on the function URL returned {status}, expected 405: "
            f"see the function's output in {log.name}"
        )


def start_emulator(cargo_lambda: str, port: int, log) -> subprocess.Popen:
    command = [
        cargo_lambda,
        "lambda",
        "watch",
        "--only-lambda-apis",
        "--invoke-address",
        "127.0.0.1",
        "--invoke-port",
        str(port),
    ]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def nearest_rank(samples: list[float], percent: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary", type=Path, help="bootstrap binary built by cargo lambda build")
    parser.add_argument("--runs", type=int, default=50, help="timed cold starts (default 50)")
    parser.add_argument("--stub", action="store_true", help="use a Runtime API stub instead of the emulator")
    parser.add_argument("--cargo-lambda", default="cargo-lambda", help="cargo-lambda program to run")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each init (default 10)")
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="tokenguard-cold-start-"))
    home = log_dir / "home"
    home.mkdir()
    function_log = open(log_dir / "function.log", "w")
    emulator = None
    try:
        if args.stub:
            front = RuntimeFront(upstream=None)
            env = function_env(f"127.0.0.1:{front.port}", "tokenguard-detector", str(home))
        else:
            emulator_port = free_port()
            emulator_log = open(log_dir / "emulator.log", "w")
            emulator = start_emulator(args.cargo_lambda, emulator_port, emulator_log)
            wait_for_port(emulator_port, timeout=60)
            front = RuntimeFront(upstream=("127.0.0.1", emulator_port))
            # cargo-lambda serves the Runtime API under /.rt.
            env = function_env(f"http://127.0.0.1:{front.port}/.rt", EMULATOR_FUNCTION, str(home))
            check_invocation(args.binary, front, env, function_log, emulator_port)

        # The first run loads the binary into the page cache and is not counted.
        time_init(args.binary, front, env, function_log, args.timeout)
        samples = [time_init(args.binary, front, env, function_log, args.timeout) for _ in range(args.runs)]
    finally:
        if emulator is not None:
            stop(emulator)
        function_log.close()

    # cargo lambda build names every binary bootstrap, in a folder named after the function.
    name = args.binary.parent.name if args.binary.name == "bootstrap" else args.binary.name
    where = "a Runtime API stub" if args.stub else "cargo-lambda's emulator"
    print(f"init phase of {name} under {where}, {len(samples)} cold starts:")
    print(f"  min    {min(samples):7.2f} ms")
    print(f"  median {statistics.median(samples):7.2f} ms")
    print(f"  p99    {nearest_rank(samples, 99):7.2f} ms (nearest rank)")
    print(f"  max    {max(samples):7.2f} ms")
    print(f"logs: {log_dir}")


if __name__ == "__main__":
    main()
