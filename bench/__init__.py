"""mcls's benchmarks, run from the repository root: the suite (`python -m bench.quality`, `python -m bench.run`),
eval-set copies (`bench.copies`), what they share (`bench.common`) and finished studies (`bench/studies/`)."""
