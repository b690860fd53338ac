"""A decorated function: each call is a task, ``success`` when it returns, ``error`` when it raises.

Run: ``python examples/decorated.py``, then ``taskreport list``.
"""

from __future__ import annotations

import taskreport


@taskreport.track(tags={"example": "decorated"})
def resize(path: str, width: int) -> str:
    """Pretend to resize an image; a width of zero is a bug in the caller."""
    if width <= 0:
        raise ValueError(f"cannot resize {path} to width {width}")
    return f"{path} -> {width}px"


@taskreport.track(name="thumbnails", tags={"example": "decorated"})
def thumbnails(paths: list[str]) -> list[str]:
    # the resize calls run while this task is current: they are recorded as its children
    return [resize(path, 128) for path in paths]


def main() -> None:
    print(thumbnails(["cat.png", "dog.png"]))
    try:
        resize("broken.png", 0)
    except ValueError as exc:
        print(f"failed as expected: {exc}")
    taskreport.flush()
    for record in taskreport.list_tasks(tag={"example": "decorated"}):
        parent = f" (child of {record.parent})" if record.parent else ""
        print(f"{record.id}  {record.name:<32} {record.status.value:<8}{parent}")


if __name__ == "__main__":
    main()
