"""``cupy.cuda`` of the simulated CuPy: one pretend device, streams that have nothing to wait for."""

from __future__ import annotations

from typing import Any


class _Runtime:
    """``cupy.cuda.runtime``: the few calls tinyllm makes."""

    @staticmethod
    def getDeviceCount() -> int:  # noqa: N802 - CUDA's name
        return 1

    @staticmethod
    def getDeviceProperties(device_id: int) -> dict:  # noqa: N802
        return {"name": b"simulated GPU (NumPy on the CPU)", "totalGlobalMem": 8 << 30, "major": 9, "minor": 0}

    @staticmethod
    def runtimeGetVersion() -> int:  # noqa: N802
        return 12080

    @staticmethod
    def driverGetVersion() -> int:  # noqa: N802
        return 12080


runtime = _Runtime()


class Device:
    def __init__(self, device: int = 0) -> None:
        self.id = int(device)

    def use(self) -> None:
        pass

    def synchronize(self) -> None:
        pass

    @property
    def mem_info(self) -> tuple[int, int]:
        return (8 << 30, 8 << 30)

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


class Stream:
    null: Stream

    def __init__(self, non_blocking: bool = False) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


Stream.null = Stream()


class Event:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import time

        self._time = time.perf_counter
        self.t = 0.0

    def record(self, stream: Any = None) -> None:
        self.t = self._time()

    def synchronize(self) -> None:
        pass


def get_elapsed_time(start: Event, end: Event) -> float:
    """Milliseconds between two recorded events."""
    return (end.t - start.t) * 1e3
