"""Peak resident set of this process, for the memory benchmarks."""


def hwm() -> int:
    """VmHWM, the peak resident set so far in bytes, read exactly (ru_maxrss is updated lazily)."""
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def reset_peak() -> int:
    """Return freed heap memory to the system, set VmHWM back to the resident set (Linux: "5" to
    /proc/self/clear_refs) and return it."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return hwm()
