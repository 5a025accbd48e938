"""Starts an ipykernel with a Spark session, on the kernel's host, under ``spark-submit``.

This file runs on the kernel host: ``kernelfleet spec install --spark`` copies it into the
kernelspec (``scripts/spark_kernel.py``) and ``bin/run.sh`` runs it. Standard library plus the
kernel's own packages (ipykernel, pyspark) only; Python 3.9+.

Two modes:

``--split-spark-opts``
    Prints the words of ``$SPARK_OPTS`` (the admin's, from kernel.json) and
    ``$KERNEL_EXTRA_SPARK_OPTS`` (the start request's) NUL-separated, for run.sh to read with
    ``mapfile -d ''``. Words are split like a POSIX shell would (quotes, backslashes) but
    nothing is expanded or evaluated. Request options must be options (``--x v``, ``--x=v``)
    and may not rename, move or re-own the application; anything else is refused (exit 2, the
    reason on stderr, which is the kernel's log).

``--local-ip ARGS…``
    Prints the address kernels bind, read from the connection file among ARGS (run.sh exports
    it as ``SPARK_LOCAL_IP``: the driver must advertise an address the executors can reach,
    and the host's name need not resolve).

``--connection-file F --spark-init-mode {lazy,eager,none} [--kernel-class module.Class]``
    Starts the kernel: under spark-submit (eager, none), or directly (lazy: run.sh starts it
    without a JVM, and PySpark runs spark-submit with the kernel's options, passed in
    ``PYSPARK_SUBMIT_ARGS``, when the session is created). ``eager`` creates the
    SparkSession before the kernel opens its ports (the kernel is ready when Spark is);
    ``lazy`` creates it in a background thread and puts placeholders named ``spark`` and
    ``sc`` in the user namespace right away: using one waits for the session and then
    behaves as the real object, which replaces the placeholder; ``none`` starts no Spark.
    The driver advertises the host address from the connection file
    (``spark.driver.host``) so executors can reach it. While a cell runs, an interrupt
    (``interrupt_mode: message``: ipykernel signals only itself, or its process group when
    it leads one, where PySpark's JVM ignores SIGINT) also cancels the session's Spark jobs.
    The session is stopped when the kernel exits.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shlex
import signal
import sys
import threading
import time

SPLITTER_FORBIDDEN = (
    "--name",
    "--master",
    "--deploy-mode",
    "--class",
    "--proxy-user",
    "--principal",
    "--keytab",
    "--kill",
    "--status",
    "--remote",  # Spark Connect: the session would run on another server
    "--properties-file",  # a file of --conf values: would bypass SPLITTER_FORBIDDEN_CONF
)
#: --conf keys that set a forbidden option another way (spark-submit reads them when the
#: option itself is not given): refused in request options like the options themselves.
SPLITTER_FORBIDDEN_CONF = (
    "spark.app.name",
    "spark.master",
    "spark.submit.deployMode",
    "spark.remote",
    "spark.kerberos.principal",
    "spark.kerberos.keytab",
    "spark.yarn.principal",
    "spark.yarn.keytab",
)
#: Every spark-submit option that takes no value (SparkSubmitOptionParser.switches, Spark 4):
#: taking one of these for an option with a value would hide the next word from the checks.
FLAG_OPTIONS = (
    "--verbose",
    "-v",
    "--supervise",
    "--help",
    "-h",
    "--usage-error",
    "--version",
    "--load-spark-defaults",
)
CONF_OPTIONS = ("--conf", "-c")
JOB_GROUP_PROPERTY = "spark.jobGroup.id"
CELL_GROUP_PREFIX = "kernelfleet-cell-"
CANCEL_AGAIN_AFTER = (0.25, 0.5, 1.0, 2.0, 4.0)  # seconds between repeated cancellations
MAX_OPTS_CHARS = 16384


class OptionsRefused(Exception):
    pass


def split_opts(text, what, trusted):
    """Words of *text* (see the module docstring); raises :class:`OptionsRefused`."""
    if len(text) > MAX_OPTS_CHARS:
        raise OptionsRefused(f"{what} is longer than {MAX_OPTS_CHARS} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise OptionsRefused(f"{what} must not contain control characters (newlines, tabs...)")
    try:
        words = shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        raise OptionsRefused(f"{what} cannot be split into words: {exc}") from None
    value_of = None  # the option whose value the next word is
    for word in words:
        name, eq, inline = word.partition("=")
        if not trusted and name in SPLITTER_FORBIDDEN:
            # in any position: a word taken for a value here may be an option to spark-submit
            raise OptionsRefused(f"{what}: {name} may not be changed for a kernel")
        if value_of is not None:
            if not trusted and value_of in CONF_OPTIONS:
                _check_conf(word, what)
            value_of = None
            continue
        if not word.startswith("-"):
            raise OptionsRefused(f"{what}: {word[:100]!r} is not an option")
        if eq and not trusted and name in CONF_OPTIONS:
            _check_conf(inline, what)
        if not eq and word not in FLAG_OPTIONS:
            value_of = name
    if value_of is not None:
        raise OptionsRefused(f"{what}: option {words[-1]!r} has no value")
    return words


def _check_conf(setting, what):
    key = setting.split("=", 1)[0].strip()
    if key in SPLITTER_FORBIDDEN_CONF:
        raise OptionsRefused(f"{what}: --conf {key} may not be changed for a kernel")


def pyspark_submit_args(env):
    """PYSPARK_SUBMIT_ARGS for PySpark's own spark-submit: the kernel's name and options,
    each word quoted (PySpark splits the value with shlex, evaluating nothing)."""
    words = split_opts(env.get("SPARK_OPTS", ""), "SPARK_OPTS", trusted=True)
    words += split_opts(env.get("KERNEL_EXTRA_SPARK_OPTS", ""), "KERNEL_EXTRA_SPARK_OPTS", False)
    name = env.get("KERNEL_ID") or "kernelfleet-kernel"
    return shlex.join(["--name", name, *words, "pyspark-shell"])


def split_main():
    try:
        words = split_opts(os.environ.get("SPARK_OPTS", ""), "SPARK_OPTS", trusted=True)
        words += split_opts(
            os.environ.get("KERNEL_EXTRA_SPARK_OPTS", ""), "KERNEL_EXTRA_SPARK_OPTS", trusted=False
        )
    except OptionsRefused as exc:
        print(f"kernelfleet: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    for word in words:
        out.write(word.encode("utf-8", "surrogateescape") + b"\0")
    out.flush()
    return 0


# -- the Spark session --------------------------------------------------------------------------


def describe(exc, limit=1000):
    """*exc* in one line for the user: the repr of PySpark's errors is empty
    (``PySparkRuntimeError()``), their text is not (``[JAVA_GATEWAY_EXITED] Java gateway
    process exited before sending its port number.``). A Java error's stack is left out."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:3])
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else repr(exc)


class SparkStarter:
    """Creates the SparkSession once (now or in a thread) and remembers the outcome."""

    def __init__(self, driver_host):
        self.driver_host = driver_host
        self.session = None
        self.error = None
        self.ready = threading.Event()
        self.started_at = time.monotonic()
        self.seconds = None
        self.cells = 0
        self.cell_group = None

    def create(self):
        try:
            from pyspark.sql import SparkSession

            builder = SparkSession.builder
            given = os.environ.get("SPARK_OPTS", "") + os.environ.get("KERNEL_EXTRA_SPARK_OPTS", "")
            if self.driver_host and "spark.driver.host" not in given:
                builder = builder.config("spark.driver.host", self.driver_host)
            self.session = builder.getOrCreate()
            self.seconds = time.monotonic() - self.started_at
            print(
                f"kernelfleet: Spark session ready in {self.seconds:.2f} s "
                f"(application {self.session.sparkContext.applicationId})",
                file=sys.stderr,
                flush=True,
            )
        except BaseException as exc:  # reported to the user on first use of `spark`
            self.error = exc
            print(
                f"kernelfleet: the Spark session could not start: {describe(exc)}",
                file=sys.stderr,
            )
        finally:
            self.ready.set()

    def start_in_background(self):
        thread = threading.Thread(target=self.create, name="kernelfleet-spark-init", daemon=True)
        thread.start()

    def wait(self):
        self.ready.wait()
        if self.error is not None:
            raise RuntimeError(
                f"the Spark session could not start: {describe(self.error)} "
                "(spark-submit's own messages are in the kernel's log)"
            )
        return self.session

    def stop(self):
        if self.ready.is_set() and self.session is not None:
            try:
                self.session.stop()
            except Exception as exc:  # the JVM may already be gone
                print(f"kernelfleet: stopping Spark: {exc!r}", file=sys.stderr)

    def begin_cell(self):
        """Put the Spark jobs this thread's next cell starts in a job group of their own.

        Called on the main thread (the one an interrupt stops) before each cell. A group the
        user set themselves is left in place, and is what an interrupt cancels.
        """
        self.cell_group = None
        if not self.ready.is_set() or self.session is None:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            context = self.session.sparkContext
            current = context.getLocalProperty(JOB_GROUP_PROPERTY)
            if current and not current.startswith(CELL_GROUP_PREFIX):
                self.cell_group = current
                return
            self.cells += 1
            group = f"{CELL_GROUP_PREFIX}{self.cells}"
            context.setLocalProperty(JOB_GROUP_PROPERTY, group)
            self.cell_group = group
        except Exception as exc:  # the JVM may be gone; the cell reports that itself
            print(f"kernelfleet: setting the cell's Spark job group: {exc!r}", file=sys.stderr)

    def cancel_jobs(self, group=None):
        """Cancel the interrupted cell's jobs (*group*), then every job of the session.

        The interrupt may arrive while the cell's call is still submitting a job: the
        scheduler then sees the job after the cancellation. So a group of our own (one per
        cell, never reused) is cancelled again for a few seconds; a user's group only once.
        """
        if not self.ready.is_set() or self.session is None:
            return
        context = self.session.sparkContext
        try:
            if group:
                context.cancelJobGroup(group)
            context.cancelAllJobs()
            print("kernelfleet: interrupted: Spark jobs cancelled", file=sys.stderr, flush=True)
            if group and group.startswith(CELL_GROUP_PREFIX):
                for pause in CANCEL_AGAIN_AFTER:
                    time.sleep(pause)
                    context.cancelJobGroup(group)
        except Exception as exc:
            print(f"kernelfleet: cancelling Spark jobs: {exc!r}", file=sys.stderr)


class Pending:
    """Stands for ``spark`` / ``sc`` until the session exists; first use waits for it."""

    def __init__(self, starter, name, namespace):
        object.__setattr__(self, "_kf", (starter, name, namespace))

    def _resolve(self):
        starter, name, namespace = object.__getattribute__(self, "_kf")
        session = starter.wait()
        value = session if name == "spark" else session.sparkContext
        if namespace.get(name) is self:
            namespace[name] = value
            if starter.cell_group is None:  # the session appeared during this cell
                starter.begin_cell()
        return value

    def __getattr__(self, attr):
        return getattr(self._resolve(), attr)

    def __setattr__(self, attr, value):
        setattr(self._resolve(), attr, value)

    def __call__(self, *args, **kwargs):
        return self._resolve()(*args, **kwargs)

    def __repr__(self):
        starter, name, _ = object.__getattribute__(self, "_kf")
        if starter.ready.is_set():
            return repr(self._resolve())
        return f"<{name}: the Spark session is starting; using it waits until it is ready>"


def publish(namespace, starter):
    """Put ``spark`` and ``sc`` (or placeholders for them) in the user namespace."""
    if starter.ready.is_set() and starter.error is None:
        namespace["spark"] = starter.session
        namespace["sc"] = starter.session.sparkContext
        return
    for name in ("spark", "sc"):
        namespace[name] = Pending(starter, name, namespace)

    def replace_when_ready():
        starter.ready.wait()
        if starter.error is None:
            for name in ("spark", "sc"):
                if isinstance(namespace.get(name), Pending):
                    value = starter.session if name == "spark" else starter.session.sparkContext
                    namespace[name] = value

    threading.Thread(
        target=replace_when_ready, name="kernelfleet-spark-publish", daemon=True
    ).start()


# -- the kernel ---------------------------------------------------------------------------------


def import_class(dotted):
    module_name, _, class_name = dotted.rpartition(".")
    module = __import__(module_name, fromlist=[class_name])
    return getattr(module, class_name)


def spark_aware(kernel_class, starter):
    """*kernel_class* whose SIGINT handler (active while a cell runs) also cancels Spark jobs."""

    class SparkAwareKernel(kernel_class):
        def do_execute(self, *args, **kwargs):
            if starter is not None:
                starter.begin_cell()
            return super().do_execute(*args, **kwargs)

        def pre_handler_hook(self):
            super().pre_handler_hook()
            if starter is None:
                return

            def on_interrupt(signum, frame):
                # From another thread: PySpark pins one JVM connection per Python thread, and
                # this thread's connection is busy with the call being interrupted.
                threading.Thread(
                    target=starter.cancel_jobs,
                    args=(starter.cell_group,),
                    name="kernelfleet-spark-cancel",
                    daemon=True,
                ).start()
                raise KeyboardInterrupt

            signal.signal(signal.SIGINT, on_interrupt)

    SparkAwareKernel.__name__ = kernel_class.__name__
    SparkAwareKernel.__qualname__ = kernel_class.__qualname__
    return SparkAwareKernel


def kernel_main(args):
    with open(args.connection_file) as f:
        driver_host = json.load(f).get("ip") or None
    if driver_host in ("0.0.0.0", "127.0.0.1"):
        driver_host = None
    starter = None
    if args.spark_init_mode != "none" and "PYSPARK_GATEWAY_PORT" not in os.environ:
        # Not started by spark-submit (lazy mode): PySpark will run spark-submit itself, with
        # the kernel's options, when the session is created.
        try:
            os.environ["PYSPARK_SUBMIT_ARGS"] = pyspark_submit_args(os.environ)
        except OptionsRefused as exc:
            print(f"kernelfleet: {exc}", file=sys.stderr)
            return 2
    if args.spark_init_mode != "none":
        starter = SparkStarter(driver_host)
        atexit.register(starter.stop)
        if args.spark_init_mode == "eager":
            starter.create()
        else:
            starter.start_in_background()

    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.kernel_class = spark_aware(import_class(args.kernel_class), starter)
    app.initialize(["-f", args.connection_file])
    if starter is not None:
        publish(app.kernel.shell.user_ns, starter)
    app.start()
    return 0


def local_ip(args):
    """The address in the first connection file among *args* (for SPARK_LOCAL_IP), or ''."""
    for arg in args:
        if not arg.endswith(".json") or not os.path.isfile(arg):
            continue
        try:
            with open(arg) as f:
                ip = json.load(f).get("ip") or ""
        except (OSError, ValueError):
            continue
        return "" if ip in ("0.0.0.0", "127.0.0.1", "localhost") else ip
    return ""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--local-ip"]:
        print(local_ip(argv[1:]))
        return 0
    parser = argparse.ArgumentParser(prog="spark_kernel.py", description=__doc__.split("\n")[0])
    parser.add_argument("--split-spark-opts", action="store_true")
    parser.add_argument("--connection-file")
    parser.add_argument("--spark-init-mode", choices=("lazy", "eager", "none"), default="lazy")
    parser.add_argument("--kernel-class", default="ipykernel.ipkernel.IPythonKernel")
    args = parser.parse_args(argv)
    if args.split_spark_opts:
        return split_main()
    if not args.connection_file:
        parser.error("--connection-file is required")
    return kernel_main(args)


if __name__ == "__main__":
    sys.exit(main())
