"""Batch detection over many studies on Dask (``python main.py batch``): inputs (:mod:`.inputs`), the per-study
task run on the workers (:mod:`.task`), the client that plans, submits and collects (:mod:`.runner`), the
cluster (:mod:`.cluster`) and the HTML report (:mod:`.report`). Qt-free."""
