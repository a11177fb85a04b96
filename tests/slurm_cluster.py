"""A real Slurm cluster on this machine for the tests: Debian's slurm-wlm and munge.

munged with a fresh key, slurmctld on a bridge, and two slurmd "nodes", each in its own network
namespace (its own address, the same filesystem), so a job of two tasks really spans two
slurmds that talk to each other and to the controller over a network. Everything lives in one
folder under /tmp and is stopped and removed on exit. Needs root (network namespaces).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

NODES = ("dsn1", "dsn2")
#: Slurm's commands and daemons this needs, from Debian's slurm-wlm and munge.
EXECUTABLES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sinfo")
FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    if os.geteuid() != 0:
        return "the Slurm tests need root (network namespaces for the two nodes)"
    absent = [e for e in (*EXECUTABLES, "ip", "nsenter") if shutil.which(e) is None]
    if absent:
        names = ", ".join(absent)
        return f"{names} not installed: apt-get install slurm-wlm munge (make test does)"
    return None


@dataclasses.dataclass
class Cluster:
    folder: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o``, as a dict (empty once Slurm has forgotten the job)."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        fields: dict[str, str] = {}
        for part in out.split():
            key, sep, value = part.partition("=")
            if sep:
                fields[key] = value
        return fields

    def state(self, job_id: str) -> str:
        return self.job(job_id).get("JobState", "")

    def wait(self, job_id: str, *, timeout: float, states: set[str] = FINAL_STATES) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(job_id)
            if state in states:
                return state
            time.sleep(0.5)
        raise AssertionError(
            f"job {job_id} still {self.state(job_id)!r} after {timeout:.0f} s\n{self.logs()}"
        )

    def logs(self) -> str:
        """The daemons' last lines, for a failing test's message."""
        parts = []
        for log in sorted(self.folder.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)


def _wait(what: str, check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=30)


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop(pid: int | None, timeout: float = 30) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _config(folder: Path, *, host: str, ctl_ip: str, ctl_port: int, ips: list[str]) -> str:
    nodes = "\n".join(
        f"NodeName={n} NodeAddr={ip} CPUs=2 State=UNKNOWN"
        for n, ip in zip(NODES, ips, strict=True)
    )
    return f"""\
ClusterName=dstest
SlurmctldHost={host}({ctl_ip})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={folder}/munge/munge.sock
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool-%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd-%n.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd-%n.log
SlurmctldPort={ctl_port}
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
PlugStackConfig={folder}/plugstack.conf
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=60
MinJobAge=3600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """Starts munged, slurmctld and two slurmd nodes; stops them and removes all after."""
    folder = Path(tempfile.mkdtemp(prefix="depthsearch-slurm-"))
    tag = secrets.token_hex(2)
    bridge, namespaces = f"dsb{tag}", [f"ds{tag}{n}" for n in NODES]
    net = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
    ctl_ip, ips = f"{net}.1", [f"{net}.{i + 2}" for i in range(len(NODES))]
    munge_dir = folder / "munge"
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    for var in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_"))]:
        if var != "SLURM_CONF":
            del env[var]
    started_links: list[str] = []
    try:
        munge_dir.mkdir(mode=0o700)
        (folder / "state").mkdir()
        key = munge_dir / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        (folder / "plugstack.conf").write_text("")
        subprocess.run(
            [
                "munged",
                f"--socket={munge_dir}/munge.sock",
                f"--key-file={key}",
                f"--pid-file={munge_dir}/munged.pid",
                f"--log-file={folder}/munged.log",
                f"--seed-file={munge_dir}/seed",
                "--force",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        _wait("munged's socket", lambda: (munge_dir / "munge.sock").exists())

        _sh("ip", "link", "add", bridge, "type", "bridge")
        started_links.append(bridge)
        _sh("ip", "addr", "add", f"{ctl_ip}/24", "dev", bridge)
        _sh("ip", "link", "set", bridge, "up")
        for i, (ns, ip) in enumerate(zip(namespaces, ips, strict=True)):
            veth = f"dsv{tag}{i}"
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            started_links.append(veth)
            _sh("ip", "link", "set", veth, "master", bridge, "up")
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")

        host = socket.gethostname().split(".")[0]
        (folder / "slurm.conf").write_text(
            _config(folder, host=host, ctl_ip=ctl_ip, ctl_port=_free_port(), ips=ips)
        )
        subprocess.run(["slurmctld", "-i"], env=env, check=True, capture_output=True, timeout=60)
        for node, ns in zip(NODES, namespaces, strict=True):
            # nsenter joins the node's network only: `ip netns exec` would also remount /sys,
            # hiding the cgroup mounts slurmd looks at when it starts.
            subprocess.run(
                ["nsenter", f"--net=/run/netns/{ns}", "slurmd", "-N", node],
                env=env,
                check=True,
                capture_output=True,
                timeout=60,
            )
        c = Cluster(folder, env)

        def idle() -> bool:
            out = c.run("sinfo", "-h", "-N", "-o", "%N %T").stdout.split()
            return out.count("idle") == len(NODES)

        try:
            _wait("both nodes idle", idle)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{c.logs()}") from None
        yield c
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(
                ["scancel", "--full", "--user=root"], env=env, capture_output=True, timeout=30
            )
        for node in NODES:
            _stop(_pid(folder / f"slurmd-{node}.pid"))
        _stop(_pid(folder / "slurmctld.pid"))
        _stop(_pid(munge_dir / "munged.pid"))
        for ns in namespaces:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
        for link in reversed(started_links):
            subprocess.run(["ip", "link", "delete", link], capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)
