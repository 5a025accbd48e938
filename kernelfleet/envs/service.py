"""Creating, rebuilding and removing kernel environments: the steps the CLI, the admin API and
the dashboard share, each reported as a progress line.

``create``:

1. **claim** the name under the store's lock, after the checks that need no work: the caller
   may create environments, is under the per-user count, the name is free as an environment
   and as a kernelspec, the kernelspec's options are valid (the installer's own check, with a
   stand-in interpreter path);
2. **build** (:mod:`kernelfleet.envs.build`) on an installed interpreter; then the disk quota;
3. **place** the build: the environment under ``<root>/<name>/<digest12>`` and its archive
   under ``<root>/archives``;
4. **ship** it where the kernelspec's kernels run (:func:`target_for`): nothing more for local
   kernels; the archive to every SSH host of the spec; for YARN, the archive into the archive
   directory (once per content hash) and ``spark.yarn.dist.archives=<uri>#env``; for Docker,
   an image with one more layer, loaded into the engine;
5. **install** the kernelspec with ``spec install``'s code (:func:`kernelfleet.specs.installer.
   install`), its interpreter the environment's, its users and groups the creator's choice;
6. mark the record ``ready``.

A failure at any step undoes the steps before it — the scratch build, the placed environment,
what reached hosts, the claimed name — so nothing half-built is left, and the error says what
failed, cause first. ``remove`` is refused while a kernel of the environment's kernelspec runs.
``rebuild`` installs the recorded lock again (same versions, hashes checked), ships the new
build and moves the kernelspec to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from traitlets.config import Config

from kernelfleet.envs import build as building
from kernelfleet.envs import containers, interpreters, model, ship
from kernelfleet.envs.interpreters import Interpreter
from kernelfleet.envs.model import EnvError, EnvRecord
from kernelfleet.envs.settings import EnvSettings
from kernelfleet.envs.store import EnvStore
from kernelfleet.errors import Conflict, Forbidden, NotFound, PublicError
from kernelfleet.specs import builders, installer
from kernelfleet.specs.kinds import ssh as ssh_kind
from kernelfleet.specs.options import SpecOptions

log = logging.getLogger("kernelfleet.envs")

#: The interpreter path of a YARN kernel's environment, relative to its container.
YARN_LINK = "env"
YARN_PYTHON = f"./{YARN_LINK}/bin/python"
KINDS = ("local", "ssh", "yarn", "docker", "k8s")
#: The kinds whose kernels run in an image: the environment is a layer of it.
IMAGE_KINDS = ("docker", "k8s")


class Say(Protocol):
    def __call__(self, text: str, *, level: str = "info", host: str = "") -> None: ...


def quiet(text: str, *, level: str = "info", host: str = "") -> None:
    del text, level, host


#: The kernels that use a kernelspec: ids of the live kernels whose spec is *name*.
InUse = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True)
class Caller:
    user: str
    admin: bool = False
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class EnvRequest:
    name: str
    packages: tuple[str, ...]
    python: str = "3"
    spec: SpecOptions = field(default_factory=lambda: SpecOptions(kind="local"))
    owner: str = ""  # default: the caller
    allow_source: bool = False


@dataclass(frozen=True)
class Prepared:
    record: EnvRecord
    interp: Interpreter
    spec: SpecOptions


@dataclass
class Placed:
    """Where the build went, so a failure can undo it."""

    venv: Path | None = None
    archive: Path | None = None
    hosts: list[str] = field(default_factory=list)
    host_dir: str = ""
    targets: dict[str, Any] = field(default_factory=dict)


class EnvService:
    def __init__(
        self,
        settings: EnvSettings,
        *,
        data_dir: str,
        kernels_dir: Path,
        in_use: InUse,
        config: Config | None = None,
        on_spec_written: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.store = EnvStore(settings.root_dir(data_dir), settings.scratch_dir())
        self.kernels_dir = kernels_dir
        self.in_use = in_use
        self.config = config if config is not None else Config()
        self.on_spec_written = on_spec_written
        self.runner = building.BuildRunner(settings, self.store)
        self._names: set[str] = set()

    # -- reading --------------------------------------------------------------------------

    def visible(self, caller: Caller) -> list[EnvRecord]:
        records = self.store.all()
        return records if caller.admin else [r for r in records if r.owner == caller.user]

    def get(self, name: str, caller: Caller) -> EnvRecord:
        record = self.store.read(model.check_name(name))
        if record is None or not (caller.admin or record.owner == caller.user):
            raise NotFound(f"No environment named '{name}'. 'kernelfleet env list' shows them.")
        return record

    def usage(self) -> dict[str, model.Usage]:
        records = self.store.all()
        return {owner: model.usage_of(owner, records) for owner in {r.owner for r in records}}

    async def interpreters(self) -> list[Interpreter]:
        return await interpreters.installed(self.settings.pythons)

    # -- create ---------------------------------------------------------------------------

    async def create(self, req: EnvRequest, caller: Caller, say: Say = quiet) -> EnvRecord:
        return await self.build_prepared(await self.prepare(req, caller), say)

    async def prepare(self, req: EnvRequest, caller: Caller) -> Prepared:
        """Every check that needs no build, then the name claimed (a ``building`` record):
        :meth:`build_prepared` must follow (it releases the name if it fails)."""
        name = model.check_name(req.name)
        owner = req.owner or caller.user
        if owner != caller.user and not caller.admin:
            raise Forbidden("Only an admin may create an environment for another user.")
        quota = self.settings.quota()
        model.check_may_create(caller.user, caller.admin, caller.groups, quota)
        requirements = model.parse_requirements(req.packages)
        source = req.allow_source and self.settings.allow_source_builds and caller.admin
        if req.allow_source and not source:
            raise Forbidden(
                "Source builds are off: an admin may ask for one when KF_ENV_ALLOW_SOURCE_BUILDS "
                "is on. Pick packages with wheels instead."
            )
        spec = self._spec_options(req, name)
        builders.validate(_stand_in(spec))
        self.runner.check()
        interp = interpreters.choose(req.python, await self.interpreters())
        record = EnvRecord(
            name=name,
            owner=owner,
            kind=spec.kind,
            kernel_name=spec.name,
            python=interp.path,
            python_version=interp.version,
            requirements=requirements,
            created=time.time(),
            authorized_users=list(spec.authorized_users),
            authorized_groups=list(spec.authorized_groups),
            allow_source=source,
        )
        await asyncio.to_thread(self._claim, record, quota)
        return Prepared(record, interp, spec)

    async def build_prepared(self, prepared: Prepared, say: Say = quiet) -> EnvRecord:
        record = prepared.record
        say(
            f"building environment {record.name} for {record.owner} on Python "
            f"{prepared.interp.version}"
        )
        try:
            return await self._build_and_offer(record, prepared.interp, prepared.spec, say, lock="")
        except BaseException:
            await asyncio.to_thread(self.store.delete, record.name)
            raise
        finally:
            self._names.discard(record.name)

    def forget_stale(self) -> list[str]:
        """Delete the ``building`` records of builds that cannot be running any more (older
        than the build timeout, with a minute to spare): a gateway or CLI that died while
        building leaves one behind."""
        limit = time.time() - self.settings.build_timeout - 60
        gone = []
        with self.store.locked():
            for record in self.store.all():
                if record.state == "building" and record.created < limit:
                    self.store.delete(record.name)
                    gone.append(record.name)
        return gone

    def _claim(self, record: EnvRecord, quota: model.Quota) -> None:
        with self.store.locked():
            if record.name in self._names or self.store.read(record.name) is not None:
                raise Conflict(
                    f"An environment named '{record.name}' exists. Pick another name, or "
                    f"remove it first ('kernelfleet env remove {record.name}')."
                )
            if (self.kernels_dir / record.kernel_name).exists():
                raise Conflict(
                    f"A kernelspec named '{record.kernel_name}' exists. Pick another name, or "
                    "give the environment's kernelspec another with --kernel-name."
                )
            usage = model.usage_of(record.owner, self.store.all())
            model.check_count(record.owner, usage, quota)
            self._names.add(record.name)
            self.store.write(record)

    def _spec_options(self, req: EnvRequest, name: str) -> SpecOptions:
        spec = req.spec
        if spec.kind not in KINDS:
            raise EnvError(
                f"Environments are offered as kernels of kind {', '.join(KINDS)}, not "
                f"'{spec.kind}'."
            )
        if spec.lang != "python":
            raise EnvError("Environments are Python environments: --language must be python.")
        return replace(
            spec,
            kernel_name=spec.kernel_name or name,
            display_name=spec.display_name or f"Python ({name})",
            env_name=name,
        )

    async def _build_and_offer(
        self,
        record: EnvRecord,
        interp: Interpreter,
        spec: SpecOptions,
        say: Say,
        *,
        lock: str,
        replace_spec: bool = False,
    ) -> EnvRecord:
        work, built = await building.build(
            self.runner,
            interp,
            record.requirements,
            lock=lock,
            source_builds=record.allow_source,
            say=say,
        )
        placed = Placed()
        try:
            others = [r for r in self.store.all() if r.name != record.name]
            usage = model.usage_of(record.owner, others)
            model.check_disk(record.owner, usage, built.size_bytes, self.settings.quota())
            say(
                f"built {len(model.parse_lock(built.lock))} packages, "
                f"{built.size_bytes / 1e6:.0f} MB, in {built.seconds:.1f} s"
            )
            record.sha256, record.lock = built.sha256, built.lock
            record.size_bytes, record.files = built.size_bytes, built.files
            record.build_seconds = built.seconds
            await asyncio.to_thread(self._place, record, built, placed)
            python = await self._ship(record, spec, placed, say)
            final = replace(spec, python=python)
            final = self._with_kind_extras(final, record)
            done = await asyncio.to_thread(
                installer.install, final, self.kernels_dir, replace=replace_spec
            )
            self.on_spec_written()
            say(f"kernelspec {done.name} installed in {done.path}")
            record.state = "ready"
            await asyncio.to_thread(self.store.write, record)
            say(f"environment {record.name} is ready: start kernel '{done.name}'")
            return record
        except BaseException:
            await self._undo(placed)
            raise
        finally:
            await building.discard(work)

    def _place(self, record: EnvRecord, built: building.Built, placed: Placed) -> None:
        venv = self.store.venv_dir(record)
        if not venv.exists():
            _move(built.venv, venv)
            placed.venv = venv
        archive = self.store.archive_path(record.sha256)
        if not archive.exists():
            _move(built.archive, archive)
            placed.archive = archive

    async def _undo(self, placed: Placed) -> None:
        if placed.hosts:
            targets = [placed.targets[h] for h in placed.hosts]
            with contextlib.suppress(Exception):
                await ship.remove_from_hosts(placed.host_dir, targets)
        if placed.venv is not None:
            await asyncio.to_thread(shutil.rmtree, placed.venv, True)
        if placed.archive is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(placed.archive.unlink)
        if "yarn_archive" in placed.targets:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(Path(placed.targets["yarn_archive"]).unlink)

    # -- shipping -------------------------------------------------------------------------

    async def _ship(self, record: EnvRecord, spec: SpecOptions, placed: Placed, say: Say) -> str:
        """Put the build where the kernels run; the kernelspec's interpreter path."""
        local_python = str(self.store.venv_dir(record) / "bin" / "python")
        if spec.kind == "local":
            return local_python
        if spec.kind == "ssh":
            return await self._ship_ssh(record, spec, placed, say)
        if spec.kind == "yarn":
            uri = await asyncio.to_thread(self._yarn_archive, record, placed)
            record.archive_uri = uri
            say(f"archive for YARN: {uri}")
            return YARN_PYTHON
        if spec.kind in IMAGE_KINDS:
            say("adding the environment to the kernel image as a layer")
            ref, archive = await asyncio.to_thread(
                containers.make_image,
                record,
                self.store.venv_dir(record),
                self.settings.image_base,
                self.store.root / record.name / "image",
            )
            record.image = ref
            size = f"{archive.stat().st_size / 1e6:.0f} MB"
            if spec.kind == "docker":
                docker_host = str(spec.kind_options.get("docker_host") or "")
                say(f"loading image {ref} ({size}) into the engine")
                await asyncio.to_thread(containers.load, archive, docker_host)
            elif self.settings.containerd_socket:
                say(f"importing image {ref} ({size}) into {self.settings.containerd_socket}")
                await asyncio.to_thread(
                    containers.import_containerd, archive, self.settings.containerd_socket
                )
            else:
                say(
                    f"image {ref} is {archive}: import it on every node ('kernelfleet image "
                    "import') or push it to the cluster's registry",
                    level="warning",
                )
            return containers.image_dir(record) + "/bin/python"
        raise EnvError(f"Environments cannot be shipped to '{spec.kind}' kernels yet.")

    def host_dir(self, record: EnvRecord) -> str:
        return f"{self.settings.host_root.rstrip('/')}/{record.name}/{record.digest12}"

    async def _ship_ssh(
        self, record: EnvRecord, spec: SpecOptions, placed: Placed, say: Say
    ) -> str:
        settings = ssh_kind.provisioner_settings(self.config, dict(spec.kind_options))
        hosts = [h.strip() for h in settings.remote_hosts if h.strip()]
        if not hosts:
            raise EnvError(
                "No hosts to ship the environment to: give --remote-hosts, or set the "
                "gateway's KF_REMOTE_HOSTS."
            )
        dest = self.host_dir(record)
        targets = {h: settings.target_for(h) for h in hosts}
        placed.targets.update(targets)
        placed.host_dir = dest
        say(
            f"shipping {record.size_bytes / 1e6:.0f} MB to {len(hosts)} host(s): {', '.join(hosts)}"
        )

        def progress(host: str, text: str) -> None:
            say(text, host=host)

        results = await ship.ship_to_hosts(
            self.store.archive_path(record.sha256),
            record.sha256,
            dest,
            [targets[h] for h in hosts],
            progress=progress,
        )
        placed.hosts = [r.host for r in results if r.ok and not r.cached]
        failed = [r for r in results if not r.ok]
        for r in results:
            if r.ok:
                what = "already there" if r.cached else f"{r.bytes_sent / 1e6:.0f} MB sent"
                say(f"{what}, {r.seconds:.1f} s", host=r.host)
            else:
                say(r.error, level="error", host=r.host)
        if failed:
            raise PublicError(
                f"The environment did not reach {len(failed)} of {len(results)} hosts "
                f"({failed[0].host}: {failed[0].error}). Fix them and create it again.",
                status=502,
            )
        record.hosts = hosts
        return f"{dest}/bin/python"

    def _yarn_archive(self, record: EnvRecord, placed: Placed) -> str:
        directory = Path(self.settings.yarn_archive_dir or self.store.root / "archives")
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{record.sha256}.tar.gz"
        source = self.store.archive_path(record.sha256)
        if not target.exists():
            tmp = directory / f".{record.sha256}.tmp-{os.getpid()}"
            shutil.copyfile(source, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
            placed.targets["yarn_archive"] = str(target)
        return f"file://{target}"

    def _with_kind_extras(self, spec: SpecOptions, record: EnvRecord) -> SpecOptions:
        if spec.kind in IMAGE_KINDS:
            return replace(spec, kind_options={**spec.kind_options, "image": record.image})
        if spec.kind != "yarn":
            return spec
        conf = dict(spec.kind_options.get("spark_conf") or {})
        conf["spark.yarn.dist.archives"] = f"{record.archive_uri}#{YARN_LINK}"
        return replace(spec, kind_options={**spec.kind_options, "spark_conf": conf})

    # -- remove, rebuild ------------------------------------------------------------------

    async def _refuse_in_use(self, record: EnvRecord, what: str) -> None:
        users = await self.in_use(record.kernel_name)
        if users:
            shown = ", ".join(users[:3]) + ("…" if len(users) > 3 else "")
            raise Conflict(
                f"Environment '{record.name}' is in use by {len(users)} kernel(s) ({shown}) of "
                f"kernelspec '{record.kernel_name}'. Shut them down first, then {what} it."
            )

    async def remove(self, name: str, caller: Caller, say: Say = quiet) -> None:
        record = self.get(name, caller)
        await self._refuse_in_use(record, "remove")
        config = await asyncio.to_thread(self._spec_config, record)
        spec_dir = self.kernels_dir / record.kernel_name
        if spec_dir.exists():
            await asyncio.to_thread(shutil.rmtree, spec_dir)
            self.on_spec_written()
            say(f"kernelspec {record.kernel_name} removed")
        if record.kind == "ssh" and record.hosts:
            settings = ssh_kind.provisioner_settings(self.config, config)
            results = await ship.remove_from_hosts(
                f"{self.settings.host_root.rstrip('/')}/{record.name}",
                [settings.target_for(h) for h in record.hosts],
            )
            for r in results:
                say(
                    "removed" if r.ok else r.error, host=r.host, level="info" if r.ok else "warning"
                )
        if record.image:
            docker_host = str(config.get("docker_host") or "")
            await asyncio.to_thread(containers.unload, record.image, docker_host)
        await asyncio.to_thread(self._delete_local, record)
        say(f"environment {record.name} removed")

    def _spec_config(self, record: EnvRecord) -> dict[str, Any]:
        try:
            kernel_json = json.loads(
                (self.kernels_dir / record.kernel_name / "kernel.json").read_text()
            )
            return dict(kernel_json["metadata"]["kernel_provisioner"]["config"])
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _delete_local(self, record: EnvRecord) -> None:
        with self.store.locked():
            self.store.delete(record.name)
            self.store.prune_archives()

    async def rebuild(self, name: str, caller: Caller, say: Say = quiet) -> EnvRecord:
        """Install the recorded lock again into a new build, ship it, point the kernelspec at
        it; the previous build is deleted."""
        record = self.get(name, caller)
        await self._refuse_in_use(record, "rebuild")
        interp = interpreters.choose(record.python, await self.interpreters())
        spec_json = installer.find_spec(
            installer.spec_manager([str(self.kernels_dir)]), record.kernel_name
        )
        spec = spec_options_of(spec_json.spec, record)
        old_sha = record.sha256
        fresh = replace(record, state="building", sha256="", hosts=[], archive_uri="")
        say(f"rebuilding environment {name} from its lock ({len(record.locked)} packages)")
        done = await self._build_and_offer(
            fresh, interp, spec, say, lock=record.lock, replace_spec=True
        )
        if done.sha256 != old_sha:
            await asyncio.to_thread(self.store.delete_build, done, done.digest12)
            await asyncio.to_thread(self.store.prune_archives)
            if record.kind == "ssh" and record.hosts:
                await self._remove_old_build(record, say)
        return done

    async def _remove_old_build(self, old: EnvRecord, say: Say) -> None:
        """The previous build of *old* off its hosts (best effort: a host that is down keeps
        it until ``env remove``)."""
        config = await asyncio.to_thread(self._spec_config, old)
        settings = ssh_kind.provisioner_settings(self.config, config)
        results = await ship.remove_from_hosts(
            self.host_dir(old), [settings.target_for(h) for h in old.hosts]
        )
        for r in results:
            level = "info" if r.ok else "warning"
            say("previous build removed" if r.ok else r.error, host=r.host, level=level)


def _stand_in(spec: SpecOptions) -> SpecOptions:
    """*spec* with what the build will decide (the interpreter, a container kind's image)
    filled in, so that every other option is checked before building."""
    options = dict(spec.kind_options)
    if spec.kind in IMAGE_KINDS and not options.get("image"):
        options["image"] = f"{containers.REGISTRY}/{spec.env_name}:0"
    return replace(spec, python="/kf-env/bin/python", kind_options=options)


def _move(source: Path, dest: Path) -> None:
    """Rename, or copy then rename when *dest* is on another filesystem (the scratch
    directory is often a tmpfs): *dest* appears whole or not at all."""
    try:
        os.rename(source, dest)
    except OSError:
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        try:
            if source.is_dir():
                shutil.copytree(source, tmp, symlinks=True)
            else:
                shutil.copyfile(source, tmp)
            os.rename(tmp, dest)
        except BaseException:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            raise


def spec_options_of(kernel_json: dict[str, Any], record: EnvRecord) -> SpecOptions:
    """The install options of an environment's kernelspec, read back from its kernel.json."""
    meta = kernel_json.get("metadata") or {}
    config = dict((meta.get("kernel_provisioner") or {}).get("config") or {})
    for key in ("authorized_users", "unauthorized_users", "authorized_groups", "launch_timeout"):
        config.pop(key, None)
    if record.kind == "yarn":
        conf = dict(config.get("spark_conf") or {})
        conf.pop("spark.yarn.dist.archives", None)
        config["spark_conf"] = conf
    return SpecOptions(
        kind=record.kind,
        kernel_name=record.kernel_name,
        display_name=str(kernel_json.get("display_name") or ""),
        authorized_users=tuple(record.authorized_users),
        authorized_groups=tuple(record.authorized_groups),
        env_name=record.name,
        kind_options={k: tuple(v) if isinstance(v, list) else v for k, v in config.items()},
    )
