"""The retrieval cache under concurrent retrievals (``batch --server`` fetches several series at once): series of
one study committed at the same moment from different threads all arrive, each complete, none lost to the race
between "is the study there yet?" and publishing it. Needs no server."""

from __future__ import annotations

import threading

from app.pacs.cache import RetrievalCache


def test_series_of_one_study_committed_at_once_all_arrive(tmp_path):
    n_threads, rounds = 8, 15
    for k in range(rounds):
        cache = RetrievalCache(tmp_path / f"cache{k}")
        study = f"1.2.826.0.1.3680043.8.498.{k}"
        gate = threading.Barrier(n_threads)
        errors: list[BaseException] = []

        def one(i: int, cache=cache, study=study, gate=gate, errors=errors) -> None:
            staging = cache.begin(study)
            for j in range(3):
                staging.write_bytes(f"{study}.{i}", f"{study}.{i}.{j}", b"DICM" + bytes([i, j]))
            gate.wait()  # every thread publishes at the same moment
            try:
                staging.commit()
            except BaseException as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for i in range(n_threads):
            folder = cache.series_dir(study, f"{study}.{i}")
            assert folder is not None, (k, i)
            assert sorted(p.read_bytes()[-1] for p in folder.iterdir()) == [0, 1, 2]
        assert not list(cache.incoming_dir.iterdir())  # every staging folder cleaned up
