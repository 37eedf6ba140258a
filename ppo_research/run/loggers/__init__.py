"""Experiment trackers, one ``logger=`` option each: the interface (base.py), wandb, TensorBoard,
and how a run is named and grouped. The run's own files are the record; a tracker mirrors them."""
