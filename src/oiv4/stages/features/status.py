"""What `oiv4 status` says about features: per model and set, shards finished and running, images with a
vector, images without one by outcome. Read from the features ledgers (safe while a run is going)."""

from __future__ import annotations

from dataclasses import dataclass, field

from oiv4.contracts.schema import ImageSet
from oiv4.io.sql import features_ledger_files, features_relation
from oiv4.io.storage import Storage


@dataclass
class FeaturesStatus:
    """One model's features of one set."""

    model: str
    image_set: str
    shards_done: int
    shards_running: int
    vectors: int = 0
    failed: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "set": self.image_set,
            "shards_done": self.shards_done,
            "shards_running": self.shards_running,
            "vectors": self.vectors,
            "failed": self.failed,
        }


def features_status(storage: Storage, sets: list[ImageSet] | None = None) -> list[FeaturesStatus]:
    """Every features ledger under the root, counted."""
    import duckdb

    out = []
    con = duckdb.connect()
    for s in sets or list(ImageSet):
        for model, rels in features_ledger_files(storage, s).items():
            done = sum(1 for r in rels if r.count("/") == 4)  # features/<m>/<set>/ledger/shard-N.parquet
            running = len({r.rsplit("/", 1)[0] for r in rels if r.count("/") == 5})
            st = FeaturesStatus(model, s.value, done, running)
            for outcome, n in features_relation(con, storage, rels).aggregate("outcome, count(*)").fetchall():
                if outcome == "ok":
                    st.vectors = int(n)
                else:
                    st.failed[str(outcome)] = int(n)
            out.append(st)
    return out


def check_pairs(storage: Storage, model: str, image_set: ImageSet | str) -> list[str]:
    """Every finished shard's npy and metadata against the checksums recorded when it finished: one line per
    file that is missing or whose bytes changed (empty: every pair is as written)."""
    import json

    from oiv4.contracts.layout import LAYOUT
    from oiv4.io.checksum import verify_checksum

    problems = []
    pattern = LAYOUT.features_checksums_glob(model, image_set)
    for rel in storage.glob(pattern):
        for entry in json.loads(storage.read_bytes(rel)).values():
            if not storage.exists(entry["path"]):
                problems.append(f"{entry['path']}: missing")
                continue
            data = storage.read_bytes(entry["path"])
            if len(data) != entry["bytes"] or verify_checksum(data, entry["checksum"]) is not None:
                problems.append(f"{entry['path']}: bytes differ from the checksum recorded when the shard finished")
    return problems
