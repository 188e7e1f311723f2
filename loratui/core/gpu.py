"""Find the machine's NVIDIA GPUs without torch: NVML first, ``nvidia-smi`` as a fallback."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

GIB = 1024**3


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total_gib: float
    free_gib: float


@dataclass
class GpuDetection:
    gpus: list[GpuInfo] = field(default_factory=list)
    source: str = "none"  # "nvml", "nvidia-smi" or "none"
    message: str = ""

    @property
    def best(self) -> GpuInfo | None:
        return max(self.gpus, key=lambda g: g.total_gib, default=None)


def _from_nvml() -> list[GpuInfo] | None:
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(GpuInfo(index, name.decode() if isinstance(name, bytes) else name,
                                mem.total / GIB, mem.free / GIB))
        return gpus
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def parse_nvidia_smi(output: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv,noheader,nounits``."""
    gpus = []
    for line in output.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        try:
            gpus.append(GpuInfo(int(parts[0]), parts[1], float(parts[2]) / 1024, float(parts[3]) / 1024))
        except ValueError:
            continue
    return gpus


def _from_nvidia_smi() -> list[GpuInfo] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    query = "--query-gpu=index,name,memory.total,memory.free"
    try:
        out = subprocess.run([exe, query, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(out)


def detect_gpus() -> GpuDetection:
    gpus = _from_nvml()
    if gpus:
        return GpuDetection(gpus, "nvml", f"{len(gpus)} NVIDIA GPU(s) found through NVML")
    gpus = _from_nvidia_smi()
    if gpus:
        return GpuDetection(gpus, "nvidia-smi", f"{len(gpus)} NVIDIA GPU(s) found through nvidia-smi")
    return GpuDetection([], "none", "no NVIDIA GPU found (no NVML driver, no nvidia-smi): training runs on the "
                                    "CPU, which is only practical for the tiny demo model")
