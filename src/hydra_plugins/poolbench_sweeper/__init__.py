"""poolbench's Hydra sweeper: Hydra's basic sweeper that reuses finished jobs before launching them."""
