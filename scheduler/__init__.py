"""corral-scheduler: the control plane."""
