"""`rtlearn experiment --scheduler`: the trials on a Dask cluster (a LocalCluster of two worker
processes, in a subprocess bounded in time) give exactly the results of the local run."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("distributed", reason="Dask distributed (extra `cluster`) is not installed")

from rtlearn.cli import main  # noqa: E402

CLUSTER_RUN = """
import sys
from distributed import LocalCluster
from rtlearn.cli import main

if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        code = main(["experiment", "online-lift", "--quick", "--trials", "3",
                     "--scheduler", cluster.scheduler_address, "--json", sys.argv[1]])
        ran = cluster.scheduler.task_prefixes["trial"].all_durations["compute"]  # runner._trial
        print(f"trial compute on the workers: {ran:.2f} s")
    sys.exit(code)
"""


def test_a_sweep_on_a_dask_cluster_gives_the_local_results(tmp_path):
    script = tmp_path / "cluster_run.py"
    script.write_text(CLUSTER_RUN)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "cluster.json")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3/3 trials" in done.stderr
    assert float(done.stdout.split("on the workers: ")[1].split()[0]) > 0  # ran there
    assert main(["experiment", "online-lift", "--quick", "--trials", "3", "--workers", "1",
                 "--json", str(tmp_path / "local.json")]) == 0
    cluster, local = (json.loads((tmp_path / f"{k}.json").read_text())
                      for k in ("cluster", "local"))
    assert [t["seed"] for t in cluster["per_trial"]] == [0, 1, 2]
    assert cluster["per_trial"] == local["per_trial"]
    assert cluster["summary"] == local["summary"]
