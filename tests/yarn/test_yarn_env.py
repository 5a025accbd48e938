"""A kernel environment used by a Spark kernel in YARN cluster mode: the environment travels
as an archive the containers unpack (``spark.yarn.dist.archives=<archive>#env``), the driver
(the kernel) and the executors run ``./env/bin/python``, and a package of the environment is
imported inside a Spark task on an executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernelfleet.client import stdout_of
from tests.conftest import client_for
from tests.contract_backends.helpers import execute_ok
from tests.envs import conftest as envs
from tests.envs.conftest import EnvDirs, env_gateway, finished
from tests.yarn.cluster import YarnCluster
from tests.yarn.kernels import gateway_config, live_apps, provisioner_config

env_dirs = envs.env_dirs  # the fixture of tests/envs

pytestmark = [pytest.mark.yarn, pytest.mark.timeout(420)]

#: The YarnKind options of the test cluster (the rest of provisioner_config is the
#: provisioner's own tuning, not a kernelspec option).
SPEC_KEYS = ("hadoop_conf_dir", "yarn_endpoints", "pyspark_archives", "spark_conf")


async def test_a_yarn_kernel_imports_an_environment_package_in_an_executor_task(
    yarn_cluster: YarnCluster, yarn_env: Path, env_dirs: EnvDirs, tmp_path: Path
) -> None:
    config = provisioner_config(yarn_cluster)
    spec = {k: config[k] for k in SPEC_KEYS}
    spec["launch_timeout"] = 180
    # archives go where every NodeManager reads them at the same path (/tmp is private)
    archives = yarn_cluster.state_dir / "env-archives"
    sections = gateway_config(tmp_path)
    async with env_gateway(env_dirs, env={"yarn_archive_dir": str(archives)}, **sections) as gw:
        c = client_for(gw)
        status, body = await c.request(
            "POST",
            "/api/envs",
            {"name": "yenv", "packages": ["toolz==1.0.*"], "python": "3.11", "kind": "yarn",
             "spec": spec},
        )  # fmt: skip
        assert status == 202, body
        job = await finished(c, body["job"])
        assert job["ok"], (job["error"], job["lines"][-6:])
        record = await c.call("GET", "/api/envs/yenv")
        archive = archives / f"{record['sha256']}.tar.gz"
        assert record["archive_uri"] == f"file://{archive}" and archive.is_file()
        kernel_json = json.loads((env_dirs.kernels / "yenv" / "kernel.json").read_text())
        conf = kernel_json["metadata"]["kernel_provisioner"]["config"]["spark_conf"]
        assert conf["spark.yarn.dist.archives"] == f"file://{archive}#env"

        model = await c.start_kernel("yenv")
        kid = model["id"]
        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(
                ws,
                "import sys, json, socket, toolz\n"
                "def probe(_):\n"
                "    import sys, socket, toolz\n"
                "    return [socket.gethostname(), sys.prefix, toolz.__version__]\n"
                "task = sc.parallelize([0], 1).map(probe).collect()[0]\n"
                "print(json.dumps({'driver': [sys.prefix, toolz.__version__], 'task': task}))",
            )
            got = json.loads(stdout_of(iopub))
            driver_prefix, driver_version = got["driver"]
            host, task_prefix, task_version = got["task"]
            # both unpacked the archive into their container: .../<container>/env
            assert driver_prefix.endswith("/env") and task_prefix.endswith("/env"), got
            assert driver_version.startswith("1.0") and task_version.startswith("1.0"), got
            assert host in {h.name for h in yarn_cluster.hosts}, got
            # Spark stages a file:// archive with each application (it copies every local
            # file: the test cluster's default filesystem is file://); on HDFS it would not
        finally:
            ws.close()
            await c.shutdown_kernel(kid)
        assert not live_apps(yarn_cluster, kid)
