"""`tellonce bench`: tellonce's overhead measured against a raw Temporal baseline, in the same run.

`shape` reads the newborn plan into a dependency shape, `raw` is the baseline written directly
on the Temporal SDK, `stack` starts the servers and workers, `measure` turns histories and
processes into figures, and `runner` drives both phases and reports them side by side.
"""
