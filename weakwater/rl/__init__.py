"""Online post-training pieces: reward functions, group advantages and policy losses, rollouts with the
project's own generation engine. The stages that use them live in :mod:`weakwater.train.stages`."""
