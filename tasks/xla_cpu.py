"""A workaround for an XLA:CPU thread-pool hang.

Applied by the commands that train many models at once.
"""

import os

CPU_POOL_FLAG = "--xla_cpu_multi_thread_eigen=false"


def avoid_thread_pool_hang() -> None:
  """Turns off XLA:CPU's multi-threaded Eigen pool for this process.

  With it on (jax 0.10, 2-core CPU), vmapped trainers (the RNN zoo, the INR fits)
  sometimes never return: every XLA worker thread waits on the pool and the
  main thread waits for the result (seen with gdb; the same wedge is reported
  for other vmapped CPU programs). Without the pool those programs run at about
  the same speed, because the models are already batched by vmap. Must run
  before JAX creates its CPU client; a flag the user set is left alone.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_multi_thread_eigen" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_POOL_FLAG}".strip()
