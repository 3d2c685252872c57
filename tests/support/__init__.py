"""Code the tests share (builders of roots, plans, archives and feature shards; servers; process finders).

It holds no tests. `tests/` is on `sys.path` (pytest puts the folder of the root `conftest.py` there), so a test
module imports it as `from support.fetch_env import planned_root` wherever the module lives under `tests/`.
"""
