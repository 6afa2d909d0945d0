"""covid-mtl core: readers, network, training, prediction, metrics and quantification."""
import os

# OpenMP's default busy-waiting makes torch crawl whenever another process shares the cores (measured: a lite
# training run 31 s -> 2.9 s, inference 15 s -> 6 s on 2 shared cores). It only takes effect if set before
# torch is first imported, hence here, at the top of the package.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
