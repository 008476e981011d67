"""Training: the resumable full-batch loop (:mod:`.loop`) and its optimiser (:mod:`.optim`)."""
