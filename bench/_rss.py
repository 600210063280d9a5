"""Peak resident set of this process, for the memory benchmarks."""


def hwm() -> int:
    """VmHWM, the peak resident set so far in bytes, read exactly (ru_maxrss is updated lazily)."""
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
