"""The collection directory: a validated manifest, segments of codes, snapshots (``State``) and writes.

``Store`` (store.py) owns a collection folder; the other modules are its parts: ``manifest`` (the frozen
``Manifest``), ``validate`` (every manifest read is checked), ``state`` (an immutable snapshot),
``loading``, ``writes``, ``create``, ``inputs`` (checks of what ``add`` receives), ``paths`` (names and
removal inside the folder) and ``diskrows`` (int8/float32 rows read from disk).
"""
