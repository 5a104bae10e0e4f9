"""A node host: connects to a gateway as role `node` and runs the commands it is asked to."""
