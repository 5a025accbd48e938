"""``kernelfleet spec migrate`` of YARN kernelspecs, end to end: Gateway Provisioners' own
``jupyter yarn-spec install`` (GP installed at test time, see tests/gpspecs.py) and an Enterprise
Gateway ``YarnClusterProcessProxy`` spec written by hand from EG's documented format are
migrated by the command an admin runs, and a kernel of each migrated spec starts through a real
in-process gateway on the test YARN cluster, runs Spark in its container and leaves nothing.

What the originals do not say comes from the gateway's settings (the ``YarnProvisioner``
section: the Hadoop client configuration whose yarn-site.xml names both RMs, pyspark on the
nodes, the Spark properties of the test cluster), as it would on an admin's gateway: GP 0.5.0's
``yarn-spec install`` leaves its ``${...}`` placeholders unrendered in the Python spec (its
``--yarn-endpoint``, ``--spark-home`` and ``--python-root`` are lost), which migrate reports
and leaves to the defaults. The EG spec's SPARK_OPTS carries what its admin would have written
there for this cluster (the jars on the nodes, the staging directory, small drivers), because
a spec's ``spark_conf`` replaces the gateway's rather than adding to it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from kernelfleet.client import stdout_of
from kernelfleet.provisioners.yarn import YarnProvisioner
from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import execute_ok
from tests.gpspecs import eg_argv, eg_spec, findings, load, migrate_cli, render
from tests.yarn.cluster import YarnCluster, spark_home
from tests.yarn.kernels import FAST_JVM, gateway_config, no_apps_left, provisioner_config

pytestmark = [pytest.mark.yarn, pytest.mark.timeout(300)]

GP_NAME = "yarn_spark_python"  # the name GP's installer gives its Python spec
EG_NAME = "eg_spark_python_yarn_cluster"
#: A start request's launch timeout: GP's installer and migrate leave the spec's short or
#: default one, and a YARN kernel takes 20-40 s here (it outranks the spec's)
LAUNCH = {"KERNEL_LAUNCH_TIMEOUT": "150"}
PROBE = (
    "import socket, sys\n"
    "print(sc.applicationId, socket.gethostname(), sys.executable, spark.range(3).count())"
)


def eg_yarn_spec(kernels: Path, cluster: YarnCluster) -> Path:
    """EG's spark_python_yarn_cluster as its docs write it, for this cluster: ``bin/run.sh``
    with the ``--RemoteProcessProxy.*`` options, SPARK_HOME, PYSPARK_PYTHON and SPARK_OPTS in
    env, both ResourceManagers in the process proxy's config."""
    spec_dir = kernels / EG_NAME
    run_sh = spec_dir / "bin" / "run.sh"
    argv = eg_argv(str(run_sh), spark_context_initialization_mode="lazy")
    home = spark_home()
    conf = provisioner_config(cluster)["spark_conf"]
    spark_opts = " ".join(
        [
            "--master yarn --deploy-mode cluster --name ${KERNEL_ID:-ERROR__NO__KERNEL_ID}",
            "--conf spark.yarn.submit.waitAppCompletion=false",
            "--conf spark.yarn.appMasterEnv.PYTHONUSERBASE=/home/${KERNEL_USERNAME}/.local",
            "--conf spark.yarn.appMasterEnv.PATH=/opt/conda/bin:$PATH",
            "--driver-memory 512m --num-executors 1",
            "--conf spark.executor.memory=512m",
            f"--conf spark.yarn.jars={conf['spark.yarn.jars']}",
            f"--conf spark.yarn.stagingDir={conf['spark.yarn.stagingDir']}",
            f"--conf 'spark.driver.extraJavaOptions={FAST_JVM}'",
            f"--conf 'spark.executor.extraJavaOptions={FAST_JVM}'",
            "--conf spark.ui.showConsoleProgress=false",
            "${KERNEL_EXTRA_SPARK_OPTS}",
        ]
    )
    rm1, rm2 = (f"{cluster.rm_url(r)}/ws/v1/cluster" for r in cluster.rm_ids)
    eg_spec(
        kernels,
        EG_NAME,
        "yarn.YarnClusterProcessProxy",
        config={"yarn_endpoint": rm1, "alt_yarn_endpoint": rm2},
        argv=argv,
        env={
            "SPARK_HOME": str(home),
            "PYSPARK_PYTHON": sys.executable,
            "PYTHONPATH": f"{home}/python:{next((home / 'python' / 'lib').glob('py4j-*.zip'))}",
            "SPARK_OPTS": spark_opts,
            "LAUNCH_OPTS": "",
        },
        display_name="Spark - Python (YARN Cluster Mode)",
    )
    run_sh.parent.mkdir()
    run_sh.write_text("#!/bin/sh\n# stands for EG's run.sh: migrate never runs it\n")
    return spec_dir


async def test_gp_and_eg_yarn_specs_migrate_and_run_spark_in_yarn_containers(
    yarn_cluster: YarnCluster, yarn_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(yarn_cluster.rm_ids) == 2, "the session cluster is HA"
    active = yarn_cluster.active_rm() or yarn_cluster.rm_ids[0]
    theirs = tmp_path / "theirs"
    kernels = render(
        "yarn-spec",
        theirs,
        "--yarn-endpoint",
        f"{yarn_cluster.rm_url(active)}/ws/v1/cluster",
        "--spark-home",
        str(spark_home()),
        "--python-root",
        sys.prefix,
    )
    gp_original = load(kernels / GP_NAME)
    assert gp_original["metadata"]["kernel_provisioner"]["provisioner_name"] == "yarn-provisioner"
    eg_yarn_spec(kernels, yarn_cluster)

    # migrated specs come first in the Jupyter path, the originals after them (unchanged)
    ours = tmp_path / "ours"
    jupyter_path = f"{ours / 'share' / 'jupyter'}:{theirs / 'share' / 'jupyter'}"
    report = migrate_cli(ours, GP_NAME, EG_NAME, jupyter_path=jupyter_path)
    assert report["problems"] == {}, report
    gp = findings(report, GP_NAME, "yarn")
    # GP's unrendered placeholders are reported, and left to the defaults
    left_out = gp["env.SPARK_OPTS ${extra_spark_opts}"]
    assert left_out[0] == "dropped" and "unrendered" in left_out[1], gp
    assert gp["env"][0] == "dropped", gp
    assert "SPARK_HOME" in gp["env"][1] and "PYSPARK_PYTHON" in gp["env"][1], gp
    eg = findings(report, EG_NAME, "yarn")
    assert eg["process_proxy.config.yarn_endpoint"][0] == "mapped", eg
    assert eg["argv --spark-context-initialization-mode"][0] == "dropped", eg
    assert not [f for f, (level, _) in {**gp, **eg}.items() if level == "unmappable"]
    assert load(kernels / GP_NAME) == gp_original

    gp_meta = load(ours / "share" / "jupyter" / "kernels" / GP_NAME)["metadata"]
    assert gp_meta["kernel_provisioner"]["provisioner_name"] == "kernelfleet-yarn", gp_meta
    eg_json = load(ours / "share" / "jupyter" / "kernels" / EG_NAME)
    eg_cfg = eg_json["metadata"]["kernel_provisioner"]["config"]
    assert eg_cfg["yarn_endpoints"] == [yarn_cluster.rm_url(r) for r in yarn_cluster.rm_ids]
    assert eg_json["argv"][0] == sys.executable, eg_json  # PYSPARK_PYTHON
    assert eg_cfg["spark_conf"]["spark.executor.instances"] == "1", eg_cfg

    monkeypatch.setenv("JUPYTER_PATH", jupyter_path)
    # the gateway's settings: what GP's installer lost and neither spec says
    test_conf = provisioner_config(yarn_cluster)
    settings = {
        "hadoop_conf_dir": test_conf["hadoop_conf_dir"],
        "pyspark_archives": test_conf["pyspark_archives"],
        "spark_conf": test_conf["spark_conf"],
        "poll_interval": 0.5,
    }
    async with temp_gateway(**gateway_config(tmp_path, YarnProvisioner=settings)) as gw:
        c = client_for(gw)
        models = await asyncio.gather(
            c.start_kernel(GP_NAME, env=LAUNCH), c.start_kernel(EG_NAME, env=LAUNCH)
        )
        kids = [m["id"] for m in models]
        nodes = {h.name for h in yarn_cluster.hosts}
        for kid in kids:
            record = gw.registry.records[kid]
            prov = record.manager.provisioner if record.manager else None
            assert isinstance(prov, YarnProvisioner) and prov.app_id, prov
            ws = await c.connect(kid)
            try:
                _, iopub = await execute_ok(ws, PROBE)
            finally:
                ws.close()
            app_id, host, python, count = stdout_of(iopub).split()
            # the kernel is the driver of its own application, in a container on a node
            assert app_id == prov.app_id and host in nodes and count == "3", stdout_of(iopub)
            if kid == kids[0]:  # GP's --python-root was lost: the nodes' python3
                assert Path(python).name == "python3" and not python.startswith(sys.prefix)
            else:  # EG's PYSPARK_PYTHON
                assert python == sys.executable, python
        for kid in kids:
            await c.shutdown_kernel(kid)
        await asyncio.gather(*(no_apps_left(yarn_cluster, kid) for kid in kids))
