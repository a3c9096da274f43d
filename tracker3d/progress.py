"""Progress bars for long CLI jobs (tqdm on stderr; silent when stderr is not a terminal)."""
from __future__ import annotations

from typing import Iterable, Optional, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(it: Iterable[T], desc: str = "", total: Optional[int] = None, unit: str = "it") -> Iterable[T]:
    return tqdm(it, desc=desc, total=total, unit=unit, disable=None, dynamic_ncols=True, leave=False)


def bar(desc: str = "", total: Optional[int] = None, unit: str = "it") -> tqdm:
    """A progress bar updated by hand (bar.update(1)); silent when stderr is not a terminal."""
    return tqdm(desc=desc, total=total, unit=unit, disable=None, dynamic_ncols=True, leave=False)
